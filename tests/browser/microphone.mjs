// The microphone is denied: the page says so and offers to connect without
// it; that call works (receive-only audio, typing possible).
import { launch, snapshot, until, screenshot, scenario, closeInput, env } from "./lib.mjs";

closeInput();
await scenario("microphone", 60_000, async (result) => {
  const { page, close } = await launch({ denyMicrophone: true });
  try {
    await page.goto(env.url);
    await page.click("#connect");
    result.deniedShown = await until(page, "microphone-denied error", () =>
      window.voxloop.error() && window.voxloop.error().code === "mic_denied", null, 10_000);
    result.denied = await snapshot(page);
    result.listenOnlyVisible = await page.isVisible("#listen-only");
    await screenshot(page, "error-microphone.png");
    await page.click("#listen-only");
    result.connected = await until(page, "connected without microphone", () => window.voxloop.connected(), null, 15_000);
    result.textEnabled = await page.isEnabled("#say-text");
    result.muteDisabled = await page.isDisabled("#mute");
    result.after = await snapshot(page);
    await page.click("#connect");
    result.ok = Boolean(result.deniedShown && result.listenOnlyVisible && result.connected && result.textEnabled);
  } finally {
    await close();
  }
});
