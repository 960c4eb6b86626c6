// Scrolling up loads older history, page after page, until the first
// message; every message once, in order.
import { cfg, check, join, newPage, run, texts } from "./lib.mjs";

await run("history", async (browser) => {
  const page = await newPage(browser, "reader");
  await join(page, cfg.room, { name: "reader" });
  let shown = (await texts(page)).length;
  check(shown > 0 && shown < cfg.total, `the welcome holds the latest page only (${shown})`);
  for (let round = 0; round < 20; round++) {
    const all = await texts(page);
    if (all[0] === cfg.first) break;
    await page.$eval("#log", (log) => {
      log.scrollTop = 0;
    });
    await page.waitForFunction((n) => document.querySelectorAll("#log li[data-seq]").length > n, all.length);
  }
  const all = await texts(page);
  const want = Array.from({ length: cfg.total }, (_, i) => `history ${i}`);
  check(JSON.stringify(all) === JSON.stringify(want), `every message once, in order: ${all.length} shown`);
  await page.waitForSelector("#older", { state: "hidden" });
});
