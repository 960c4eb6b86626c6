// What every browser scenario shares: the system Chromium driven headless by
// playwright-core, the test's parameters (CHAT_TEST, JSON, from
// tests/tests/browser.rs), bounded waits on DOM state, and a line protocol
// with the Rust test on stdout/stdin ("STEP name" out, one line back in).
import { chromium } from "playwright-core";
import { createInterface } from "node:readline";

export const CHROMIUM = process.env.CHROMIUM_BIN || "/usr/bin/chromium";
export const cfg = JSON.parse(process.env.CHAT_TEST || "{}");
// Every wait is bounded; a scenario fails instead of hanging.
export const WAIT_MS = 20000;

export async function launch() {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
  });
}

// A page whose console errors and failed requests fail the scenario: a CSP
// violation or a script error shows up here.
export async function newPage(browser, label, viewport) {
  const ctx = await browser.newContext({
    viewport: viewport || { width: 1100, height: 720 },
    ignoreHTTPSErrors: Boolean(cfg.insecure),
  });
  const page = await ctx.newPage();
  page.setDefaultTimeout(WAIT_MS);
  page.on("console", (m) => {
    if (m.type() === "error") problems.push(`${label}: console error: ${m.text()}`);
  });
  page.on("pageerror", (e) => problems.push(`${label}: page error: ${e.message}`));
  return page;
}

export const problems = [];

// Drops the console errors an expected failure caused (a 401 on purpose).
export function forgive(re) {
  const keep = problems.filter((p) => !re.test(p));
  problems.splice(0, problems.length, ...keep);
}

// Joins a room from the chat page's form; resolves once the page is online.
export async function join(page, room, who) {
  await page.goto(cfg.api + "/");
  await page.fill("#join-room", room);
  if (who.token) await page.fill("#join-token", who.token);
  else await page.fill("#join-name", who.name);
  await page.press(who.token ? "#join-token" : "#join-name", "Enter");
  await page.waitForSelector("#status.online");
  await page.waitForSelector("#join", { state: "hidden" });
  await page.waitForSelector("#log", { state: "visible" });
}

// Types a line and sends it with Enter (the keyboard path).
export async function say(page, text) {
  await page.fill("#text", text);
  await page.press("#text", "Enter");
}

// Waits until a room message line with this exact text is shown and
// acknowledged (it has a seq), and returns how many such lines there are.
export async function waitMessage(page, text) {
  await page.waitForFunction(
    (t) => [...document.querySelectorAll("#log li[data-seq] .text")].some((e) => e.textContent === t),
    text,
  );
}

export async function texts(page, sel = "#log li[data-seq] .text") {
  return page.$$eval(sel, (els) => els.map((e) => e.textContent));
}

export function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
}

// Tells the Rust test a step is reached and waits for its answer line.
const lines = createInterface({ input: process.stdin });
const queue = [];
const waiters = [];
lines.on("line", (l) => (waiters.length ? waiters.shift()(l) : queue.push(l)));
export function step(name) {
  process.stdout.write(`STEP ${name}\n`);
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`no answer to STEP ${name}`)), WAIT_MS);
    const done = (l) => {
      clearTimeout(t);
      resolve(l);
    };
    if (queue.length) done(queue.shift());
    else waiters.push(done);
  });
}

// Runs a scenario: prints "ok NAME" on success, the error and exit code 1
// otherwise; console errors of the pages fail it too.
export async function run(name, body) {
  const browser = await launch();
  let code = 0;
  try {
    await body(browser);
    if (problems.length) throw new Error(problems.join("\n"));
    process.stdout.write(`ok ${name}\n`);
  } catch (e) {
    process.stdout.write(`FAILED ${name}: ${e.stack || e}\n`);
    code = 1;
  } finally {
    await browser.close().catch(() => {});
    lines.close();
  }
  process.exit(code);
}
