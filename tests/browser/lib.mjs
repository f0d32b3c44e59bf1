// Shared by the browser scenarios: launch Debian's Chromium through
// playwright-core with a fake microphone, read the page's state, report.
//
// Environment (set by tests/browser.rs):
//   VOXLOOP_URL        the server, e.g. http://127.0.0.1:41234
//   VOXLOOP_FAKE_MIC   WAV file Chromium uses as the microphone (it loops it)
//   VOXLOOP_ARTIFACTS  directory for screenshots
//   VOXLOOP_CHROMIUM   browser binary (default /usr/bin/chromium)
//   VOXLOOP_TMP        scratch directory for the browser profile
//
// A scenario prints progress lines on stderr and exactly one line
// `RESULT {json}` on stdout, then exits 0 (its own checks passed) or 1.
import { chromium } from "playwright-core";
import fs from "node:fs";
import path from "node:path";
import readline from "node:readline";

export const env = {
  url: required("VOXLOOP_URL"),
  fakeMic: process.env.VOXLOOP_FAKE_MIC || null,
  artifacts: process.env.VOXLOOP_ARTIFACTS || null,
  chromium: process.env.VOXLOOP_CHROMIUM || "/usr/bin/chromium",
  tmp: process.env.VOXLOOP_TMP || fs.mkdtempSync("/tmp/voxloop-browser-"),
};

function required(name) {
  const v = process.env[name];
  if (!v) {
    console.error(`${name} is not set (tests/browser.rs sets it)`);
    process.exit(2);
  }
  return v;
}

const started = Date.now();
export function log(...args) {
  console.error(`[${((Date.now() - started) / 1000).toFixed(1)} s]`, ...args);
}

// Playwright's own --disable-features list (chromiumSwitches.ts), repeated:
// Chromium keeps only the last --disable-features switch, so ours must carry
// these too, or startup requests to outside services come back.
const PLAYWRIGHT_DISABLED = [
  "AvoidUnnecessaryBeforeUnloadCheckSync", "DestroyProfileOnBrowserClose", "HttpsUpgrades",
  "HttpsFirstBalancedModeAutoEnable", "LensOverlay", "MediaRouter", "PaintHolding",
  "ThirdPartyStoragePartitioning", "AvoidCorsURLLoaderRestartOnRedirect", "OptimizationHints",
  "NetworkTimeServiceQuerying", "AimEnabled", "PreconnectToSearch",
];

/**
 * Launch headless Chromium with a fake microphone playing `fakeMic` (a WAV
 * file Chromium loops), a fresh
 * profile, and nothing that talks to the outside. Returns {context, page, close}.
 */
export async function launch({
  fakeMic = env.fakeMic,
  viewport = { width: 1000, height: 760 },
  denyMicrophone = false,
} = {}) {
  const profile = fs.mkdtempSync(path.join(env.tmp, "profile-"));
  const args = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    // Answers the microphone prompt: allow, or deny as a person could.
    denyMicrophone ? "--use-fake-ui-for-media-stream=deny" : "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    ...(fakeMic ? [`--use-file-for-fake-audio-capture=${fakeMic}`] : []),
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    // No name lookups at all (the server is an IP literal): even with the
    // switches above, Chromium still asks DNS for its update service.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    // Host candidates as plain addresses, not mDNS names (no multicast on the
    // network), and loopback candidates, since the server listens on 127.0.0.1.
    `--disable-features=${[...PLAYWRIGHT_DISABLED, "WebRtcHideLocalIpsWithMdns"].join(",")}`,
    "--allow-loopback-in-peer-connection",
  ];
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: env.chromium,
    headless: true,
    args,
    viewport,
    deviceScaleFactor: 1,
  });
  const page = context.pages()[0] || (await context.newPage());
  page.on("console", (m) => log(`console.${m.type()}: ${m.text()}`));
  page.on("pageerror", (e) => log(`page error: ${e.message}`));
  const close = async () => {
    await context.close().catch(() => {});
    fs.rmSync(profile, { recursive: true, force: true });
  };
  return { context, page, close };
}

/** The page's state through its `window.voxloop` hooks. */
export async function snapshot(page) {
  return page.evaluate(() => {
    const v = window.voxloop;
    const alert = document.getElementById("alert");
    return {
      state: v.state(),
      connected: v.connected(),
      sessionId: v.sessionId(),
      error: v.error(),
      alertVisible: !alert.hidden,
      alertText: alert.hidden ? null : document.getElementById("alert-text").textContent,
      transcript: v.transcript(),
      timings: v.timings(),
      stats: v.stats(),
      stateText: document.getElementById("state-text").textContent,
      latencyText: document.getElementById("v2v").textContent,
      codecText: document.getElementById("info-codec").textContent,
      rttText: document.getElementById("info-rtt").textContent,
      sessionText: document.getElementById("info-session").textContent,
    };
  });
}

/** Wait until `fn(window)` (a string expression or function run in the page) is truthy. */
export async function until(page, what, fn, arg, timeoutMs) {
  log(`waiting for ${what} (up to ${timeoutMs / 1000} s)`);
  try {
    await page.waitForFunction(fn, arg, { timeout: timeoutMs, polling: 50 });
    log(`ok: ${what}`);
    return true;
  } catch (e) {
    log(`timed out: ${what}`);
    return false;
  }
}

/** Sample `window.voxloop.<name>()` every 20 ms for `ms`; returns the maximum. */
export async function peakLevel(page, name, ms) {
  return page.evaluate(async ([name, ms]) => {
    let peak = 0;
    const end = performance.now() + ms;
    while (performance.now() < end) {
      peak = Math.max(peak, window.voxloop[name]());
      await new Promise((r) => setTimeout(r, 20));
    }
    return peak;
  }, [name, ms]);
}

// Open the page, record the assistant's peak level from then on (read it
// as window.__assistantPeak), press Connect and wait for the session id.
// Returns whether it connected.
export async function connectTrackingAssistant(page) {
  await page.goto(env.url);
  await page.evaluate(() => {
    window.__assistantPeak = 0;
    setInterval(() => { window.__assistantPeak = Math.max(window.__assistantPeak, window.voxloop.assistantLevel()); }, 20);
  });
  await page.click("#connect");
  return until(page, "connected", () => window.voxloop.connected() && window.voxloop.sessionId(), null, 15_000);
}

export async function screenshot(page, name) {
  if (!env.artifacts) return null;
  fs.mkdirSync(env.artifacts, { recursive: true });
  const file = path.join(env.artifacts, name);
  // The whole page body, however tall, and nothing below it.
  await page.locator("body").screenshot({ path: file });
  log(`screenshot: ${file}`);
  return file;
}

/** Print the one RESULT line and exit: 0 if `ok`. */
export function finish(result) {
  process.stdout.write(`RESULT ${JSON.stringify(result)}\n`);
  process.exit(result.ok ? 0 : 1);
}

/** Run `body` with a hard deadline; any exception or the deadline ends with ok: false. */
export async function scenario(name, deadlineMs, body) {
  const result = { scenario: name, ok: false };
  const timer = setTimeout(() => {
    result.error = `scenario did not finish within ${deadlineMs / 1000} s`;
    finish(result);
  }, deadlineMs);
  try {
    await body(result);
  } catch (e) {
    result.ok = false;
    result.error = String((e && e.stack) || e);
  }
  clearTimeout(timer);
  finish(result);
}

// Steps coordinated with the Rust test: we print `STEP name` on stdout and
// wait for one line on stdin before going on (the test restarts the server in between).
const lines = readline.createInterface({ input: process.stdin });
const queued = [];
const waiting = [];
lines.on("line", (l) => (waiting.length ? waiting.shift()(l) : queued.push(l)));
export function step(name) {
  process.stdout.write(`STEP ${name}\n`);
  return new Promise((resolve) => (queued.length ? resolve(queued.shift()) : waiting.push(resolve)));
}
export function closeInput() {
  lines.close();
}

/** Wait `ms` milliseconds. */
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
