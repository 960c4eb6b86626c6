// Two pages chat with each other; a message holding HTML shows as text; a
// phone-sized page works with the keyboard alone.
import { cfg, check, join, newPage, run, say, texts, waitMessage } from "./lib.mjs";

await run("two_pages", async (browser) => {
  const alice = await newPage(browser, "alice");
  const bob = await newPage(browser, "bob", { width: 390, height: 780 });
  await join(alice, cfg.room, { name: "alice" });
  await join(bob, cfg.room, { name: "bob" });
  if (cfg.expectUrl) {
    // Behind the proxy, the page joined through the proxy's wss:// URL.
    const url = await alice.evaluate(() => S.ws && S.ws.url);
    check(url && url.startsWith(cfg.expectUrl), `joined through ${cfg.expectUrl}: ${url}`);
  }

  // Each sees the other in the member list.
  await alice.waitForFunction(() =>
    [...document.querySelectorAll("#members .name")].some((e) => e.textContent === "bob"),
  );
  check((await bob.textContent("#member-count")) === "2", "bob counts two members");

  await say(alice, "hello bob");
  // Typing shows on the other page (for a few seconds).
  await bob.waitForFunction(() => document.querySelector("#typing").textContent === "alice is typing…");
  await waitMessage(bob, "hello bob");
  await waitMessage(alice, "hello bob");
  const from = await bob.$eval("#log li[data-seq]:last-child .name", (e) => e.textContent);
  check(from === "alice", `bob sees the author alice, not ${from}`);

  // Bob answers with the keyboard alone: the message box has the focus
  // after joining, Enter sends.
  check((await bob.evaluate(() => document.activeElement.id)) === "text", "the message box has the focus");
  await bob.keyboard.type("hi alice");
  await bob.keyboard.press("Enter");
  await waitMessage(alice, "hi alice");
  await waitMessage(bob, "hi alice"); // acked on the sender's page

  // HTML in a message is text: no element is made of it, no script runs.
  const evil = `<img src=x onerror="window.pwned=1"><b id="bold">bold</b><script>window.pwned=2</script>`;
  await say(alice, evil);
  await waitMessage(bob, evil);
  await waitMessage(alice, evil); // acked (stored) on the sender's page
  for (const p of [alice, bob]) {
    const made = await p.$$eval("#log img, #log b, #log script", (e) => e.length);
    check(made === 0, `no element made of the message (${made})`);
    check((await p.evaluate(() => window.pwned)) === undefined, "no script of the message ran");
  }

  // A whisper: chosen in the "send to" list; bob gets it, shown as a whisper.
  const bobId = await bob.evaluate(() => S.me.id);
  await alice.selectOption("#to", bobId);
  await say(alice, "just between us");
  await bob.waitForFunction(() =>
    [...document.querySelectorAll("#log li.whisper")].some(
      (li) => li.querySelector(".name").textContent === "alice whispers" && li.querySelector(".text").textContent === "just between us",
    ),
  );
  await alice.selectOption("#to", "");

  // Every line once, in order, on both pages.
  const want = ["hello bob", "hi alice", evil];
  for (const p of [alice, bob]) {
    const got = await texts(p);
    check(JSON.stringify(got) === JSON.stringify(want), `messages in order once: ${JSON.stringify(got)}`);
  }

  if (cfg.screenshots) {
    await alice.fill("#text", "see you at 5");
    await alice.screenshot({ path: `${cfg.screenshots}/chat.png` });
    await bob.screenshot({ path: `${cfg.screenshots}/chat-phone.png` });
  }
});
