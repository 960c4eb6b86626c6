// A room with a time limit: the page counts down from the server's
// `closing` warning, says when the room ends, and stops retrying once the
// room is gone.
import { cfg, forgive, join, newPage, run } from "./lib.mjs";

await run("closing", async (browser) => {
  const page = await newPage(browser, "guest");
  await join(page, cfg.room, { name: "guest" });
  // The warning 10 s before the end (sent 15 s after the room started).
  await page.waitForFunction(() => /^The room closes in \d+ s/.test(document.querySelector("#banner").textContent), null, {
    timeout: 30000,
  });
  // The end: the room is gone, the join form says so.
  await page.waitForFunction(() => document.querySelector("#join-error").textContent.includes("has ended"), null, {
    timeout: 30000,
  });
  forgive(/status of 404/); // the lookup of the ended room, on purpose
});
