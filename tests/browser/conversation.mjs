// Test 1: a spoken question through the page. Click Connect; the fake
// microphone asks "What is the capital of France?"; the page must show the
// user's transcript, the streamed reply, the assistant's audio on its level
// meter, the latency readout and the session panel.
import { launch, snapshot, until, screenshot, scenario, log, closeInput } from "./lib.mjs";
import { env } from "./lib.mjs";

closeInput();
await scenario("conversation", 120_000, async (result) => {
  const { page, close } = await launch();
  try {
    await page.goto(env.url);
    // Sample both meters from the start, through the page's own hooks.
    await page.evaluate(() => {
      window.__levels = { mic: 0, assistant: 0, assistantBeforeReply: 0 };
      setInterval(() => {
        const l = window.__levels;
        const a = window.voxloop.assistantLevel();
        l.mic = Math.max(l.mic, window.voxloop.micLevel());
        l.assistant = Math.max(l.assistant, a);
        const replied = window.voxloop.transcript().some((e) => e.role === "assistant");
        if (!replied) l.assistantBeforeReply = Math.max(l.assistantBeforeReply, a);
      }, 20);
    });
    const t0 = Date.now();
    await page.click("#connect");
    result.connected = await until(page, "media connected", () => window.voxloop.connected(), null, 15_000);
    result.connectMs = Date.now() - t0;
    result.userTranscript = await until(page, "user transcript", () =>
      window.voxloop.transcript().some((e) => e.role === "user" && /capital of france/i.test(e.text)), null, 40_000);
    result.reply = await until(page, "final reply", () =>
      window.voxloop.transcript().some((e) => e.role === "assistant" && e.final && e.text), null, 40_000);
    result.timingsShown = await until(page, "latency readout", () =>
      window.voxloop.timings() && document.getElementById("v2v").textContent !== "–", null, 20_000);
    // A picture of the page while the assistant talks (for the README), if we are in time.
    if (await until(page, "assistant audible now", () => window.voxloop.assistantLevel() > 0.03, null, 3_000)) {
      result.speakingScreenshot = await screenshot(page, "conversation-speaking.png");
    }
    result.assistantAudio = await until(page, "assistant level meter moving", () =>
      window.__levels.assistant > 0.02, null, 20_000);
    result.backToListening = await until(page, "back to listening", () =>
      window.voxloop.state() === "listening", null, 30_000);
    result.statsShown = await until(page, "codec and RTT in the session panel", () =>
      /opus/i.test(document.getElementById("info-codec").textContent) &&
      /ms/.test(document.getElementById("info-rtt").textContent), null, 10_000);
    result.levels = await page.evaluate(() => window.__levels);
    result.page = await snapshot(page);
    result.meterAria = await page.getAttribute("#assistant-level", "aria-valuenow");
    result.screenshot = await screenshot(page, "conversation.png");
    await page.setViewportSize({ width: 390, height: 844 });
    result.phoneScreenshot = await screenshot(page, "conversation-phone.png");
    result.phoneOverflow = await page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth);
    await page.click("#connect"); // hang up
    result.hungUp = await until(page, "hung up", () => window.voxloop.state() === "idle", null, 5_000);
    result.ok = result.connected && result.userTranscript && result.reply && result.assistantAudio &&
      result.timingsShown && result.backToListening && result.statsShown && result.hungUp;
    log("levels", JSON.stringify(result.levels));
  } finally {
    await close();
  }
});
