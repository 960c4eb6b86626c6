// A member joins and leaves: the member list follows, and a user on two
// devices is one member (counted once, shown with its devices). Moderator
// controls show for the moderator only, and work: delete, kick.
import { cfg, check, join, newPage, run, say, waitMessage } from "./lib.mjs";

const names = (p) => p.$$eval("#members li .name", (e) => e.map((x) => x.textContent));

await run("members", async (browser) => {
  const ann = await newPage(browser, "ann");
  await join(ann, cfg.room, { token: cfg.tokens.ann });
  check(JSON.stringify(await names(ann)) === '["Ann"]', "alone at first");

  const carol1 = await newPage(browser, "carol-phone");
  await join(carol1, cfg.room, { token: cfg.tokens.carol });
  await ann.waitForFunction(() => document.querySelector("#member-count").textContent === "2");
  await ann.waitForFunction(() => [...document.querySelectorAll("#log .system")].some((e) => e.textContent === "Carol joined."));

  // Carol's second device: still one member, on every page.
  const carol2 = await newPage(browser, "carol-laptop");
  await join(carol2, cfg.room, { token: cfg.tokens.carol });
  await carol2.waitForFunction(() =>
    [...document.querySelectorAll("#members li")].some((li) => li.textContent.includes("Carol") && li.textContent.includes("2 devices")),
  );
  for (const p of [ann, carol2]) {
    const n = await names(p);
    check(JSON.stringify(n) === '["Ann","Carol"]', `Carol counted once: ${JSON.stringify(n)}`);
    check((await p.textContent("#member-count")) === "2", "two members");
  }

  // One device leaves: Carol stays; the last one leaves: Carol is gone.
  await carol1.click("#leave");
  await carol1.waitForSelector("#join", { state: "visible" });
  await carol2.click("#leave");
  await ann.waitForFunction(() => document.querySelector("#member-count").textContent === "1");
  check(JSON.stringify(await names(ann)) === '["Ann"]', "Carol left the list");
  const lines = await ann.$$eval("#log .system", (e) => e.map((x) => x.textContent));
  check(lines.filter((l) => l === "Carol joined.").length === 1, `one join line: ${JSON.stringify(lines)}`);
  check(lines.filter((l) => l === "Carol left.").length === 1, `one leave line: ${JSON.stringify(lines)}`);

  // Moderation: Carol (a member) sees no controls; Ann (a moderator) does.
  await join(carol1, cfg.room, { token: cfg.tokens.carol });
  await say(carol1, "buy cheap stuff");
  await waitMessage(ann, "buy cheap stuff");
  await waitMessage(carol1, "buy cheap stuff");
  check((await carol1.$$("#members button, #log button")).length === 0, "no moderator controls for a member");
  await ann.waitForSelector('#members button[aria-label="Kick Carol"]');
  const seq = await ann.$eval("#log li[data-seq]:last-of-type", (li) => li.dataset.seq);
  await ann.click(`#log button[aria-label="Delete message ${seq}"]`);
  await carol1.waitForFunction((s) => document.querySelector(`#log li[data-seq="${s}"] .text`).textContent === "(message deleted)", seq);
  await ann.click('#members button[aria-label="Kick Carol"]');
  await carol1.waitForSelector("#join", { state: "visible" });
  const why = await carol1.textContent("#join-error");
  check(why.startsWith("You were removed from the room") && why.includes("Ann"), `Carol is told: ${why}`);
  await ann.waitForFunction(() => document.querySelector("#member-count").textContent === "1");
});
