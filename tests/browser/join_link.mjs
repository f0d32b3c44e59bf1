// A join link (issue 14): the server has auth on. The page opened without a
// token cannot connect; opened from `voxloop token --url` it connects, and
// the token leaves the address bar.
import { launch, until, snapshot, screenshot, scenario, closeInput, env } from "./lib.mjs";

closeInput();
await scenario("join_link", 60_000, async (result) => {
  const { page, close } = await launch();
  try {
    const base = env.url.split("#")[0];
    await page.goto(base);
    await page.click("#connect");
    result.refusedWithoutToken = await until(page, "the join-link error without a token", () =>
      window.voxloop.error() !== null && window.voxloop.error().code === "auth", null, 15_000);
    result.without = await snapshot(page);
    await page.goto("about:blank");
    await page.goto(env.url);
    result.hashCleared = await page.evaluate(() => location.hash === "");
    await page.click("#connect");
    result.connected = await until(page, "connected with the join link", () =>
      window.voxloop.connected() && window.voxloop.sessionId(), null, 15_000);
    result.with = await snapshot(page);
    await screenshot(page, "join-link.png");
    result.ok = Boolean(result.refusedWithoutToken && result.hashCleared && result.connected);
  } finally {
    await close();
  }
});
