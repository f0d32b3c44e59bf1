// Test 2: errors a person can act on, and reconnecting without a reload.
// The server runs the echo pipeline with --max-sessions 1. Steps marked STEP
// wait for tests/browser.rs to stop or restart the server.
//   1. connect page A;  page B gets "busy";  A hangs up, B's retry connects
//   2. the server is killed: B shows "connection lost"
//   3. retry while it is down: "cannot reach the server"
//   4. the server is back on the same port: retry connects, no reload
import { launch, snapshot, until, screenshot, scenario, step, env } from "./lib.mjs";

const hasError = (code) => window.voxloop.error() !== null && window.voxloop.error().code === code;

await scenario("reconnect", 120_000, async (result) => {
  const { context, page: a, close } = await launch();
  try {
    await a.goto(env.url);
    await a.click("#connect");
    result.aConnected = await until(a, "page A connected", () => window.voxloop.connected(), null, 15_000);

    const b = await context.newPage();
    b.on("pageerror", (e) => console.error(`page B error: ${e.message}`));
    await b.goto(env.url);
    await b.evaluate(() => { window.__loadedOnce = true; });
    await b.click("#connect");
    result.busyShown = await until(b, "busy error on page B", hasError, "busy", 15_000);
    result.busy = await snapshot(b);
    await screenshot(b, "error-busy.png");

    await a.click("#connect"); // hang up A: its slot frees
    await until(a, "page A idle", () => window.voxloop.state() === "idle", null, 5_000);
    await b.click("#retry");
    result.bConnected = await until(b, "page B connected after busy", () => window.voxloop.connected(), null, 15_000);
    result.firstSession = await b.evaluate(() => window.voxloop.sessionId());

    await step("connected"); // the test kills the server
    result.lostShown = await until(b, "connection-lost error", hasError, "lost", 15_000);
    result.lost = await snapshot(b);

    await b.click("#retry");
    result.unreachableShown = await until(b, "server-unreachable error", hasError, "unreachable", 15_000);
    result.unreachable = await snapshot(b);
    await screenshot(b, "error-unreachable.png");

    await step("unreachable"); // the test starts the server again on the same port
    await b.click("#retry");
    result.reconnected = await until(b, "reconnected", () => window.voxloop.connected(), null, 15_000);
    result.afterReconnect = await snapshot(b);
    result.notReloaded = await b.evaluate(() => window.__loadedOnce === true);
    await b.click("#connect");
    result.ok = Boolean(result.aConnected && result.busyShown && result.bConnected && result.lostShown &&
      result.unreachableShown && result.reconnected && result.notReloaded);
  } finally {
    await close();
  }
});
