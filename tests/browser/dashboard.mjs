// The operator dashboard: the admin key typed once (kept in the tab's
// session storage, never in a URL), the room table and charts, a notice to
// one room seen on a chat page, drain and resume, and a room shut down.
import { cfg, check, forgive, join, newPage, run, say } from "./lib.mjs";

await run("dashboard", async (browser) => {
  const chat = await newPage(browser, "chat");
  await join(chat, cfg.room, { name: "visitor" });

  const dash = await newPage(browser, "dashboard", { width: 1280, height: 900 });
  await dash.goto(cfg.admin + "/");
  await dash.fill("#key", "not the key");
  await dash.press("#key", "Enter");
  await dash.waitForFunction(() => document.querySelector("#login-error").textContent === "Wrong admin key.");
  check(await dash.isHidden("#dash"), "nothing shown without the key");
  forgive(/status of 401/);

  await dash.fill("#key", cfg.adminKey);
  await dash.press("#key", "Enter");
  const row = `#rooms tr[data-room="${cfg.room}"]`;
  await dash.waitForSelector(`${row} td.status-ready`);
  await dash.waitForFunction((r) => document.querySelector(`${r} td:nth-of-type(3)`).textContent === "1", row);
  check(!dash.url().includes(cfg.adminKey), "the key is not in the URL");
  check((await dash.evaluate(() => sessionStorage.getItem("chatserver.adminKey"))) === cfg.adminKey, "the key is in session storage");
  // A reload keeps the tab's key: no second login.
  await dash.reload();
  await dash.waitForSelector(`${row} td.status-ready`);
  check(await dash.isHidden("#login"), "no second login after a reload");

  // Some traffic for the charts, then a notice to the room.
  for (let i = 0; i < 6; i++) await say(chat, `busy line ${i}`);
  await dash.fill(`${row} input`, "Maintenance at noon");
  await dash.press(`${row} input`, "Enter");
  await chat.waitForFunction(() =>
    [...document.querySelectorAll("#log .notice")].some((e) => e.textContent.includes("Maintenance at noon")),
  );

  // Drain, then resume.
  await dash.click("#drain");
  await dash.waitForFunction(() => document.querySelector("#drain-state").textContent === "draining");
  await dash.click("#resume");
  await dash.waitForFunction(() => document.querySelector("#drain-state").textContent === "accepting rooms");

  if (cfg.screenshots) {
    // A few polls of steady traffic for the charts (screenshots only).
    for (let i = 0; i < 16; i++) {
      await say(chat, `steady line ${i}`);
      await dash.waitForTimeout(500);
    }
    await dash.screenshot({ path: `${cfg.screenshots}/dashboard.png`, fullPage: true });
  }

  // Shut the room down: two presses (the first arms the button).
  await dash.click(`${row} button[aria-label="Shut down ${cfg.room}"]`);
  await dash.click(`${row} button[aria-label="Shut down ${cfg.room}"]`);
  await dash.waitForFunction(
    (r) => {
      const tr = document.querySelector(r);
      return !tr || !tr.querySelector("td.status-ready");
    },
    row,
  );
  // The chat page is told.
  await chat.waitForFunction(() => /closing|shut down/i.test(document.querySelector("#banner").textContent));
});
