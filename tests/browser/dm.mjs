// Two token users in different rooms exchange a direct message and see the
// read receipt; a message to someone offline shows as sent, then as read
// once they read it; presence dots follow.
import { cfg, check, join, newPage, run } from "./lib.mjs";

const state = (p, text) =>
  p.$$eval("#dm-log li", (lis, t) => lis.filter((li) => li.querySelector(".text").textContent === t).map((li) => li.querySelector(".state")?.textContent), text);

async function sendDm(p, text) {
  await p.fill("#dm-text", text);
  await p.press("#dm-text", "Enter");
}

await run("dm", async (browser) => {
  const ann = await newPage(browser, "ann");
  const ben = await newPage(browser, "ben");
  // A refused join is said in words, on the join form.
  await ann.goto(cfg.api + "/");
  await ann.fill("#join-room", cfg.rooms[0]);
  await ann.fill("#join-token", "not-a-token");
  await ann.press("#join-token", "Enter");
  await ann.waitForFunction(() => document.querySelector("#join-error").textContent.startsWith("The sign-in was refused"));
  check(await ann.isVisible("#join"), "the join form stays");
  await join(ann, cfg.rooms[0], { token: cfg.tokens.ann });
  await join(ben, cfg.rooms[1], { token: cfg.tokens.ben });
  await ann.waitForSelector("#dms", { state: "visible" });

  // Ann opens a conversation with Ben by his user id and writes.
  await ann.fill("#dm-new-user", "u-ben");
  await ann.press("#dm-new-user", "Enter");
  await ann.waitForSelector('#conversations button[data-with="u-ben"] .dot.online');
  await sendDm(ann, "lunch at noon?");
  await ann.waitForFunction(() => [...document.querySelectorAll("#dm-log .state")].some((e) => e.textContent === "sent"));

  // Ben, in another room, sees an unread conversation with Ann, online.
  await ben.waitForSelector('#conversations button[data-with="u-ann"] .badge.unread');
  check((await ben.textContent("#dm-unread")) === "1", "one unread");
  await ben.waitForSelector('#conversations button[data-with="u-ann"] .dot.online');
  await ben.click('#conversations button[data-with="u-ann"]');
  await ben.waitForFunction(() => [...document.querySelectorAll("#dm-log .text")].some((e) => e.textContent === "lunch at noon?"));
  await ben.waitForSelector("#dm-unread", { state: "hidden" });

  // Ann sees the receipt.
  await ann.waitForFunction(() => [...document.querySelectorAll("#dm-log li")].some((li) => li.querySelector(".text").textContent === "lunch at noon?" && li.querySelector(".state.read")));

  // Ben answers; Ann has the conversation open and reads it at once.
  await sendDm(ben, "yes!");
  await ann.waitForFunction(() => [...document.querySelectorAll("#dm-log .text")].some((e) => e.textContent === "yes!"));
  await ben.waitForFunction(() => [...document.querySelectorAll("#dm-log li")].some((li) => li.querySelector(".text").textContent === "yes!" && li.querySelector(".state.read")));

  // Ben goes away: Ann sees him offline; her next message stays "sent".
  await ben.click("#leave");
  await ann.waitForSelector('#conversations button[data-with="u-ben"] .dot:not(.online)');
  await sendDm(ann, "see you there");
  await ann.waitForFunction(() => [...document.querySelectorAll("#dm-log li")].some((li) => li.querySelector(".text").textContent === "see you there" && li.querySelector(".state")?.textContent === "sent"));
  if (cfg.screenshots) await ann.screenshot({ path: `${cfg.screenshots}/chat-dm.png` });

  // Ben comes back, finds one unread message, reads it: Ann sees "read".
  await join(ben, cfg.rooms[1], { token: cfg.tokens.ben });
  await ben.waitForSelector('#conversations button[data-with="u-ann"] .badge.unread');
  await ben.click('#conversations button[data-with="u-ann"]');
  await ben.waitForFunction(() => [...document.querySelectorAll("#dm-log .text")].some((e) => e.textContent === "see you there"));
  await ann.waitForFunction(() => [...document.querySelectorAll("#dm-log li")].some((li) => li.querySelector(".text").textContent === "see you there" && li.querySelector(".state.read")));
  const s = await state(ann, "see you there");
  check(JSON.stringify(s) === '["read"]', `one line, read: ${JSON.stringify(s)}`);
});
