// Test 3: a proactive prompt (issue 5). POST /sessions/{id}/prompt with
// {"text","id"}; the server speaks it and sends {"type":"prompt",id,text,turn}
// on the events channel; the page shows it in the transcript, marked proactive.
import { launch, snapshot, until, screenshot, scenario, closeInput, connectTrackingAssistant, log, env } from "./lib.mjs";

closeInput();
const PROMPT = {
  id: `browser-test-${Date.now()}`,
  text: "This is a proactive reminder from the browser test.",
};

await scenario("prompt", 90_000, async (result) => {
  const { page, close } = await launch();
  try {
    result.connected = await connectTrackingAssistant(page);
    const id = await page.evaluate(() => window.voxloop.sessionId());
    const r = await fetch(`${env.url}/sessions/${id}/prompt`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(PROMPT),
    });
    result.post = { status: r.status, body: (await r.text()).slice(0, 300) };
    log(`POST prompt -> ${r.status} ${result.post.body}`);
    result.prompt = PROMPT;
    result.shown = await until(page, "proactive prompt in the transcript", (text) =>
      window.voxloop.transcript().some((e) => e.role === "assistant" && e.proactive && e.text.includes(text)),
      PROMPT.text, 30_000);
    result.marked = await page.evaluate(() => {
      const li = document.querySelector('#transcript li[data-proactive="true"]');
      return li ? { badge: li.querySelector(".badge.proactive")?.textContent || null, text: li.textContent } : null;
    });
    result.spoken = await until(page, "prompt audio on the assistant meter", () => window.__assistantPeak > 0.02, null, 20_000);
    result.assistantPeak = await page.evaluate(() => window.__assistantPeak);
    result.page = await snapshot(page);
    await screenshot(page, "prompt.png");
    result.ok = Boolean(result.connected && result.post.status >= 200 && result.post.status < 300 && result.shown && result.spoken);
  } finally {
    await close();
  }
});
