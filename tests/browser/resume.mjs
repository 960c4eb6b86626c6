// The room's worker is killed (SIGKILL, by the Rust test at STEP kill): the
// pages say they are offline, reconnect with since/epoch, and end with
// every message exactly once.
import { cfg, check, join, newPage, run, say, step, texts, waitMessage } from "./lib.mjs";

await run("resume", async (browser) => {
  const alice = await newPage(browser, "alice");
  const bob = await newPage(browser, "bob");
  await join(alice, cfg.room, { name: "alice" });
  await join(bob, cfg.room, { name: "bob" });
  for (const t of ["before 1", "before 2", "before 3"]) {
    await say(alice, t);
    await waitMessage(alice, t); // acked: stored
    await waitMessage(bob, t);
  }
  await step("kill");
  // Both pages notice and say so (the count of drops stays: the page may be
  // back before anyone looks), then come back on their own.
  for (const p of [alice, bob]) {
    await p.waitForFunction(() => Number(document.getElementById("status").dataset.drops || 0) >= 1, null, { timeout: 20000 });
  }
  for (const p of [alice, bob]) await p.waitForSelector("#status.online", { timeout: 30000 });
  await waitMessage(alice, cfg.away);
  await waitMessage(bob, cfg.away);
  await say(alice, "after 1");
  await say(bob, "after 2");
  for (const p of [alice, bob]) {
    await waitMessage(p, "after 1");
    await waitMessage(p, "after 2");
  }
  const want = ["before 1", "before 2", "before 3", cfg.away, "after 1", "after 2"];
  for (const [who, p] of [["alice", alice], ["bob", bob]]) {
    const got = await texts(p);
    check(got.length === want.length && want.every((t) => got.filter((x) => x === t).length === 1), `${who}: every message once: ${JSON.stringify(got)}`);
    const seqs = await p.$$eval("#log li[data-seq]", (e) => e.map((x) => Number(x.dataset.seq)));
    check(seqs.every((s, i) => i === 0 || s > seqs[i - 1]), `${who}: in seq order: ${seqs}`);
    check((await p.$eval("#log", (l) => l.dataset.resumed)) === "true", `${who}: resumed with since/epoch`);
  }
});
