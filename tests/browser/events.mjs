// The page against the documented event shapes. After a real connection,
// server events are injected on the real "events" data channel (captured when
// the page creates it) and the transcript, badges and panels must show them.
// This tests the page's side of the protocol; tests/conversation.rs tests the
// server's.
import { launch, snapshot, until, screenshot, scenario, closeInput, env } from "./lib.mjs";

closeInput();
await scenario("events", 60_000, async (result) => {
  const { page, close } = await launch();
  try {
    await page.addInitScript(() => {
      const create = RTCPeerConnection.prototype.createDataChannel;
      RTCPeerConnection.prototype.createDataChannel = function (...args) {
        const channel = create.apply(this, args);
        window.__events = channel;
        return channel;
      };
    });
    await page.goto(env.url);
    await page.click("#connect");
    result.connected = await until(page, "connected", () =>
      window.voxloop.connected() && window.__events.readyState === "open", null, 15_000);
    const inject = (ev) => page.evaluate((ev) =>
      window.__events.dispatchEvent(new MessageEvent("message", { data: JSON.stringify(ev) })), ev);
    const stateText = () => page.textContent("#state-text");

    result.states = [];
    for (const state of ["thinking", "user_speaking", "speaking"]) {
      await inject({ type: "state", state });
      result.states.push(await stateText());
    }
    await inject({ type: "transcript", turn: 1, text: "Tell me a long story.", final: true });
    for (const text of ["Once upon ", "a time there ", "was a fox who ran."]) {
      await inject({ type: "reply_delta", turn: 1, text });
    }
    const turn1 = '#transcript li[data-role="assistant"][data-turn="1"]';
    result.streaming = await page.getAttribute(turn1, "aria-busy");
    // The interruption frame: the entry is cut off at once, before the reply
    // that says what was heard.
    await inject({ type: "barge_in", turn: 1 });
    result.bargeIn = {
      busy: await page.getAttribute(turn1, "aria-busy"),
      interrupted: await page.getAttribute(turn1, "data-interrupted"),
      count: await page.evaluate(() => window.voxloop.interruptions()),
    };
    await inject({ type: "reply", turn: 1, text: "Once upon a time", interrupted: true });
    await inject({ type: "prompt", turn: 2, id: "p-1", text: "Your meeting starts in five minutes." });
    await inject({ type: "reply", turn: 2, text: "Your meeting starts in five minutes.", interrupted: false });
    await inject({
      type: "timings", turn: 2, endpoint_ms: 400, asr_ms: 150, asr_decode_ms: 140,
      llm_first_token_ms: 90, first_sentence_ms: 300, tts_first_audio_ms: 120, total_ms: 1234,
    });
    await inject({ type: "busy", turn: 3, text: "One moment, please." });
    await inject({ type: "error", turn: 4, message: "llm failed" });
    await inject({ type: "something_new", turn: 9 }); // unknown events are ignored

    // A typed message, then the server's transcript of it: one bubble.
    await page.fill("#say-text", "Hello there.");
    await page.press("#say-text", "Enter");
    await inject({ type: "transcript", turn: 5, text: "Hello there", final: true });

    // Space toggles the microphone (focus outside any control).
    await page.evaluate(() => document.activeElement && document.activeElement.blur());
    await page.keyboard.press("Space");
    result.muted = {
      pressed: await page.getAttribute("#mute", "aria-pressed"),
      trackEnabled: await page.evaluate(() => window.voxloop.micEnabled()),
      stateText: await stateText(),
    };
    await page.keyboard.press("Space");
    result.unmuted = await page.evaluate(() => window.voxloop.micEnabled());

    result.dom = await page.evaluate(() => {
      const q = (s) => document.querySelector(s);
      return {
        unheard: q('#transcript li[data-interrupted="true"] .unheard')?.textContent.trim() ?? null,
        interruptedBadge: q('#transcript li[data-interrupted="true"] .badge.interrupted')?.textContent ?? null,
        proactiveBadge: q('#transcript li[data-proactive="true"] .badge.proactive')?.textContent ?? null,
        latency: q("#v2v").textContent,
        asrStage: q('#stages dd[data-stage="asr_ms"]').textContent,
        turn2Timing: q('#transcript li[data-role="assistant"][data-turn="2"] .timing')?.textContent ?? null,
      };
    });
    result.page = await snapshot(page);
    await screenshot(page, "events.png");
    result.ok = Boolean(result.connected && result.unmuted === true);
  } finally {
    await close();
  }
});
