// A typed message: the page sends {"type":"text","text":…} on the events
// channel and the assistant answers by voice.
import { launch, snapshot, until, screenshot, scenario, closeInput, connectTrackingAssistant } from "./lib.mjs";

closeInput();
const QUESTION = "What is the capital of France?";

await scenario("typed", 90_000, async (result) => {
  const { page, close } = await launch();
  try {
    result.connected = await connectTrackingAssistant(page);
    // Type like a person: focus, text, Enter.
    await page.click("#say-text");
    await page.keyboard.type(QUESTION);
    await page.keyboard.press("Enter");
    result.typedShown = await until(page, "typed message in the transcript", (q) =>
      window.voxloop.transcript().some((e) => e.role === "user" && e.typed && e.text === q), QUESTION, 2_000);
    result.inputCleared = (await page.inputValue("#say-text")) === "";
    result.replied = await until(page, "reply to the typed message", () =>
      window.voxloop.transcript().some((e) => e.role === "assistant" && e.final && e.text),
      null, 40_000);
    result.spoken = await until(page, "reply audio on the assistant meter", () => window.__assistantPeak > 0.02, null, 20_000);
    result.page = await snapshot(page);
    await screenshot(page, "typed.png");
    result.ok = Boolean(result.connected && result.typedShown && result.inputCleared && result.replied && result.spoken);
  } finally {
    await close();
  }
});
