// The web console in a real browser: Debian's chromium, headless, driven by
// puppeteer-core. Started by run_browser.py, which runs esd (10,000 streams
// seeded) and passes everything through the environment. Prints one line a
// check; exits 1 when any failed. Screenshots go to $SHOTS.
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import puppeteer from "puppeteer-core";

const env = process.env;
const url = env.WEB_URL;
let failed = 0;
function check(cond, what) {
  console.log((cond ? "ok   " : "FAIL ") + what);
  if (!cond) failed++;
}
function esctl(...args) {
  return execFileSync(env.ESCTL_BIN, ["-s", env.ES_ADDRESS, ...args], {
    env: { ...env, ES_USER: env.ADMIN_USER, ES_TOKEN: env.ADMIN_TOKEN },
  }).toString();
}

const profile = mkdtempSync(join(tmpdir(), "esd-web-chromium-"));
const browser = await puppeteer.launch({
  executablePath: env.CHROMIUM,
  headless: false, // the flags below say --headless themselves
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--user-data-dir=" + profile, "--window-size=1280,900"],
  defaultViewport: { width: 1280, height: 900 },
});

// Every dialog (alert, confirm, prompt) and page error is recorded: the
// injected event must not run any script.
const dialogs = [];
const pageErrors = [];
async function newPage(context) {
  const page = await context.newPage();
  page.on("dialog", async (d) => { dialogs.push(d.type() + ": " + d.message()); await d.dismiss(); });
  page.on("pageerror", (e) => pageErrors.push(String(e)));
  return page;
}
const text = (page, sel) => page.$eval(sel, (e) => e.textContent);
const shot = (page, name) => page.screenshot({ path: join(env.SHOTS, name + ".png"), fullPage: true });

async function login(page, user, token) {
  await page.goto(url + "/", { waitUntil: "domcontentloaded" });
  await page.waitForSelector("#login-form");
  await page.type("#user", user);
  await page.type("#token", token);
  await page.click("#login-button");
  await page.waitForSelector("#head");
}

try {
  // ---- admin: log in, overview
  const admin = await browser.createBrowserContext();
  const page = await newPage(admin);
  await page.goto(url + "/", { waitUntil: "domcontentloaded" });
  await page.waitForSelector("#login-form");
  await shot(page, "login");
  await login(page, env.ADMIN_USER, env.ADMIN_TOKEN);
  const stats = JSON.parse(esctl("--json", "stats").split("\n")[0]);
  const want = Number(stats.head_position).toLocaleString("en-US");
  await page.waitForFunction((w) => document.getElementById("head").textContent === w, { timeout: 10000 }, want)
    .catch(() => {});
  const head = await text(page, "#head");
  check(head === want, `overview shows head ${head}, esctl stats says ${stats.head_position}`);
  check(!(await page.$eval("#nav-sessions", (e) => e.hidden)), "admin sees the Sessions page in the menu");
  // the page refreshes itself: wait for a few refreshes so the chart has a line
  await page.waitForFunction(() => Number(document.getElementById("cards").dataset.refreshes) >= 4,
    { timeout: 20000 });
  const refreshedHead = await text(page, "#head");
  check(refreshedHead === want, "overview still right after live refreshes");
  await shot(page, "overview");

  // ---- streams: find one by prefix among 10,000
  await page.goto(url + "/#/streams", { waitUntil: "domcontentloaded" });
  await page.waitForSelector("#streams-body tr");
  const firstPage = await page.$$eval("#streams-body tr", (rows) => rows.length);
  check(firstPage === 50 && (await page.$("#streams-next")) !== null, "streams page: 50 rows and a next page");
  await page.click("#prefix", { clickCount: 3 });
  await page.type("#prefix", "needle");
  await page.click("#streams-form button");
  await page.waitForFunction(() => location.hash.includes("prefix=needle") &&
    document.querySelectorAll("#streams-body tr").length === 1 &&
    document.querySelector("#streams-body a") !== null, { timeout: 10000 });
  const found = await page.$$eval("#streams-body a", (as) => as.map((a) => a.textContent));
  check(found.length === 1 && found[0] === env.NEEDLE, `prefix "needle" finds ${found} among 10,000 streams`);
  await shot(page, "streams");

  // ---- a stream's events
  await page.click("#streams-body a");
  await page.waitForSelector("#stream-title");
  const types = await page.$$eval("#events .event .type", (es) => es.map((e) => e.textContent));
  check(types.join(",") === "BinaryBlob,OrderPaid,OrderPlaced", `stream page: events newest first (${types})`);
  const pretty = await page.$$eval("#events .event pre.data", (es) => es.map((e) => e.textContent));
  check(pretty[2].includes('\n  "order": 42'), "stream page: JSON data pretty-printed");
  check(pretty[0].startsWith("00 ff fe 41 42 0a 80"), "stream page: non-UTF-8 data shown as hex");
  const links = await page.$$eval("#events .event .causation-link a[href^='#/event/']", (as) => as.map((a) => a.textContent));
  check(links.includes(env.FIRST_ID), "stream page: causation ids are links to the event's position");
  check((await text(page, "#life-state")) === "live" && (await page.$("#stream-delete")) !== null &&
    (await page.$("#stream-tombstone")) !== null, "stream page: lifecycle state, and an admin's delete and tombstone");
  await shot(page, "stream");
  await page.click("#events .event .causation-link a");
  await page.waitForFunction(() => document.querySelector("h1")?.textContent.startsWith("Event at position"), { timeout: 10000 });
  check((await text(page, ".event .type")) === "OrderPlaced", "a causation link opens the event it names");

  // ---- an id that names no event: said plainly, no link
  await page.goto(url + "/#/stream/orphan-orders-7", { waitUntil: "domcontentloaded" });
  await page.waitForSelector("#events .event .causation-link");
  const orphan = await text(page, "#events .event .causation-link");
  const orphanLinks = await page.$$eval("#events .event .causation-link a", (as) => as.length);
  check(orphan.includes("not found") && orphanLinks === 0, `an unknown causation id: "${orphan}", no link`);
  check((await page.$$eval("#events .event .correlation-link a", (as) => as.length)) === 1,
    "the same event's known correlation id is a link");
  await shot(page, "links");
  await page.goto(url + "/#/find/5a5a5a5a-5a5a-405a-9a5a-5a5a5a5a5a5a", { waitUntil: "domcontentloaded" });
  await page.waitForSelector("#not-found");
  check((await text(page, "#not-found")).startsWith("No event has the id"), "looking up an unknown id: said plainly");

  // ---- lifecycle: set retention, delete, tombstone, each confirmed
  async function confirmWith(yes, shotName) {
    await page.waitForFunction(() => !document.getElementById("confirm").hidden, { timeout: 10000 });
    const q = await text(page, "#confirm-text");
    if (shotName) await shot(page, shotName);
    await page.click(yes ? "#confirm-yes" : "#confirm-no");
    return q;
  }
  await page.goto(url + "/#/stream/retain-1", { waitUntil: "domcontentloaded" });
  await page.waitForSelector("#meta-form");
  await page.click("#meta-max_count", { clickCount: 3 });
  await page.type("#meta-max_count", "2");
  await page.click("#meta-set");
  let q = await confirmWith(false);
  check(q.includes("max count 2") && q.includes("metadata revision none"), `retention asks first: "${q}"`);
  check((await text(page, "#life-max-count")) === "no limit", "cancelled: nothing changed");
  await page.click("#meta-set");
  await confirmWith(true);
  await page.waitForFunction(() => document.getElementById("life-max-count")?.textContent === "2 events", { timeout: 10000 });
  const kept = await page.$$eval("#events .event", (es) => es.length);
  check(kept === 2 && (await text(page, "#life-meta-rev")) === "0", `max count 2 set: ${kept} events shown, metadata revision 0`);
  const meta = JSON.parse(esctl("--json", "stream", "meta", "retain-1").split("\n")[0]);
  check(meta.max_count === 2, "esctl sees the retention set in the browser");
  await shot(page, "lifecycle");
  await page.goto(url + "/#/stream/doomed-1", { waitUntil: "domcontentloaded" });
  await page.waitForSelector("#stream-delete");
  await page.click("#stream-delete");
  q = await confirmWith(true);
  check(q.includes("at revision 1"), `delete names the revision it expects: "${q}"`);
  await page.waitForFunction(() => document.getElementById("life-state")?.textContent === "deleted", { timeout: 10000 });
  check((await page.$$eval("#events .event", (es) => es.length)) === 0, "a deleted stream shows no events");
  await page.goto(url + "/#/stream/doomed-2", { waitUntil: "domcontentloaded" });
  await page.waitForSelector("#stream-tombstone");
  esctl("append", "doomed-2", "Late", "{}"); // someone appends after the page was shown
  await page.click("#stream-tombstone");
  q = await confirmWith(true);
  await page.waitForFunction(() => document.getElementById("life-msg")?.textContent.includes("Not changed"), { timeout: 10000 });
  check((await text(page, "#life-state")) === "live", `a stale revision is refused: "${await text(page, "#life-msg")}"`);
  await page.reload({ waitUntil: "domcontentloaded" });
  await page.waitForSelector("#stream-tombstone");
  await page.click("#stream-tombstone");
  q = await confirmWith(true, "confirm-tombstone");
  check(q.includes("cannot be undone") && q.includes("at revision 2"), `tombstone warns and names the revision it was shown: "${q}"`);
  await page.waitForFunction(() => document.getElementById("life-state")?.textContent === "tombstoned", { timeout: 10000 });
  check((await page.$("#stream-delete")) === null && (await page.$("#meta-form")) === null, "a tombstoned stream offers no change");
  await shot(page, "tombstoned");

  // ---- untrusted data stays text
  await page.goto(url + "/#/stream/xss-1", { waitUntil: "domcontentloaded" });
  await page.waitForSelector("#events .event pre.data");
  const xss = await text(page, "#events .event pre.data");
  const imgs = await page.$$eval("img", (is) => is.length);
  check(xss === "<img src=x onerror=alert(1)>", "the injected event shows its characters");
  check(imgs === 0 && dialogs.length === 0, `no element made and no script ran (images ${imgs}, dialogs ${dialogs})`);
  await shot(page, "xss");

  // ---- a big event: cut in the list, whole on demand
  await page.goto(url + "/#/stream/big-1", { waitUntil: "domcontentloaded" });
  await page.waitForSelector("#events .event button.show-all");
  const cut = await text(page, "#events .event pre.data");
  check(cut.length === 2048 && (await text(page, "#events .event .enc")).includes("truncated"),
    `a big event is cut in the list (${cut.length} characters shown)`);
  await page.click("#events .event button.show-all");
  await page.waitForFunction(() => document.querySelector("h1")?.textContent.startsWith("Event at position"), { timeout: 10000 });
  const whole = await text(page, ".event pre.data");
  check(whole.includes('"pad": "' + "x".repeat(6000) + '"'), `"Show all" shows the whole event, pretty-printed (${whole.length} characters)`);

  // ---- live tail
  await page.goto(url + "/#/log", { waitUntil: "domcontentloaded" });
  await page.waitForSelector("#live");
  await page.click("#live");
  await page.waitForFunction(() => document.getElementById("tail-status").textContent === "live", { timeout: 10000 });
  const t0 = Date.now();
  esctl("append", "tail-1", "TailedEvent", '{"n":1}');
  const appended = Date.now();
  let seen = false;
  try {
    await page.waitForFunction(() => [...document.querySelectorAll("#events .event.fresh .type")]
      .some((e) => e.textContent === "TailedEvent"), { timeout: 2000, polling: 50 });
    seen = true;
  } catch (e) { seen = false; }
  const shown = Date.now();
  check(seen, `live tail shows the appended event within 2 s (esctl ${appended - t0} ms, then shown after ${shown - appended} ms)`);
  await shot(page, "log");

  // ---- admin sessions page
  await page.goto(url + "/#/sessions", { waitUntil: "domcontentloaded" });
  await page.waitForSelector("#sessions-table");
  await shot(page, "sessions");

  // ---- consumer groups: the list (made by esctl), a group with its
  // member and parked events (parked by web_member), replay and delete
  await page.goto(url + "/#/groups", { waitUntil: "domcontentloaded" });
  await page.waitForSelector("#groups-body tr a");
  const ginfo = JSON.parse(esctl("--json", "group", "info", env.GROUP).split("\n")[0]);
  const grows = await page.$$eval("#groups-body tr", (rows) => rows.map((r) => [...r.children].map((c) => c.textContent)));
  const orow = grows.find((r) => r[0] === env.GROUP);
  check(orow && grows.some((r) => r[0] === env.XSS_GROUP), `groups page lists the groups made by esctl (${grows.map((r) => r[0])})`);
  const fmt = (n) => Number(n).toLocaleString("en-US");
  check(orow && orow[2] === fmt(ginfo.checkpoint) && orow[3] === fmt(ginfo.lag) && orow[4] === "1" &&
    orow[5] === "3" && orow[6] === "60", `groups page: checkpoint, lag, members, in flight, parked as esctl says (${orow})`);
  // refreshed live: an event appended to the group's target raises its lag on the page
  esctl("append", "load-live", "Seeded", "{}");
  const ginfo2 = JSON.parse(esctl("--json", "group", "info", env.GROUP).split("\n")[0]);
  const liveLag = await page.waitForFunction((name, want) => [...document.querySelectorAll("#groups-body tr")]
    .some((r) => r.children[0].textContent === name && r.children[3].textContent === want),
  { timeout: 10000 }, env.GROUP, fmt(ginfo2.lag)).then(() => true, () => false);
  check(liveLag && ginfo2.lag === ginfo.lag + 1, `groups page refreshes itself: lag ${fmt(ginfo.lag)} -> ${fmt(ginfo2.lag)} after an append`);
  Object.assign(ginfo, ginfo2);
  await shot(page, "groups");
  await page.click(`#groups-body a[href="#/group/${encodeURIComponent(env.GROUP)}"]`);
  await page.waitForSelector("#parked-body tr[data-position]");
  check((await text(page, "#group-title")) === "Group " + env.GROUP && (await text(page, "#group-lag")) === fmt(ginfo.lag),
    "group page: title and lag");
  const mrow = await page.$$eval("#members-body tr td", (tds) => tds.map((t) => t.textContent));
  check(mrow[0] === "web-member-hold" && mrow[1] === env.READER_USER && mrow[4] === "3 / 3",
    `group page: the member and its events in flight (${mrow})`);
  const prows = await page.$$eval("#parked-body tr[data-position]", (rows) => rows.map((r) => [...r.children].map((c) => c.textContent)));
  const parkedList = JSON.parse(esctl("--json", "group", "parked", env.GROUP).split("\n")[0]);
  check(prows.length === 50 && prows[0][0] === String(parkedList[0].position) && prows[0][1] === parkedList[0].stream &&
    prows[0][2] === "0" && prows[0][3] === "Seeded" && prows[0][4] === "1",
    `group page: a parked event with its position, stream, revision, type, deliveries (${prows[0]})`);
  check(prows[0][5] === env.XSS_REASON && (await page.$$eval("#parked-body script, main img", (x) => x.length)) === 0 &&
    dialogs.length === 0, "the parked event's reason (HTML) shows as text, no element made, no script ran");
  check((await page.$("#group-replay")) !== null && (await page.$("#group-delete")) !== null, "admin: replay and delete offered");
  await shot(page, "group");
  await page.screenshot({ path: join(env.SHOTS, "group-top.png") }); // the window only: for docs/img
  await page.click("#parked-next");
  await page.waitForFunction(() => document.getElementById("parked-title")?.textContent.includes("after position"), { timeout: 10000 });
  const page2 = await page.$$eval("#parked-body tr[data-position] td:first-child", (tds) => tds.map((t) => t.textContent));
  check(page2.length === 10 && page2[0] === String(parkedList[50].position) && (await page.$("#parked-next")) === null &&
    (await page.$("#parked-first")) !== null, `parked events: the second page holds the last 10 (${page2.length})`);
  await page.click("#parked-body tr[data-position] td:first-child a");
  await page.waitForFunction(() => document.querySelector("h1")?.textContent.startsWith("Event at position"), { timeout: 10000 });
  check((await text(page, "h1")) === "Event at position " + parkedList[50].position, "a parked event links to the event");
  await page.goto(url + "/#/group/" + encodeURIComponent(env.GROUP), { waitUntil: "domcontentloaded" });
  await page.waitForSelector("#group-replay");
  await page.click("#group-replay");
  q = await confirmWith(false);
  check(q.includes("Replay the 60 parked events of group " + env.GROUP), `replay asks first: "${q}"`);
  await page.click("#group-replay");
  q = await confirmWith(true);
  await page.waitForFunction(() => document.getElementById("group-msg")?.textContent.includes("put back"), { timeout: 10000 });
  check((await text(page, "#group-msg")) === "60 parked events put back for delivery.", `replayed: "${await text(page, "#group-msg")}"`);
  await page.goto(url + "/#/group/" + encodeURIComponent(env.XSS_GROUP), { waitUntil: "domcontentloaded" });
  await page.waitForSelector("#group-delete");
  check((await text(page, "#group-title")) === "Group " + env.XSS_GROUP && dialogs.length === 0,
    "a group named with HTML: its name as text");
  await page.click("#group-delete");
  q = await confirmWith(true, "confirm-group-delete");
  check(q.includes("cannot be undone"), `group delete warns: "${q}"`);
  await page.waitForFunction(() => location.hash === "#/groups" && document.querySelector("#groups-body tr a"), { timeout: 10000 });
  const left = await page.$$eval("#groups-body tr td:first-child a", (as) => as.map((a) => a.textContent));
  const esctlLeft = JSON.parse(esctl("--json", "group", "list").split("\n")[0]).map((g) => g.name);
  check(left.join() === env.GROUP && esctlLeft.join() === env.GROUP, `deleted: the page and esctl list only ${env.GROUP} (${left}; ${esctlLeft})`);

  // ---- a reader: no admin action, forged request refused
  const rctx = await browser.createBrowserContext();
  const rpage = await newPage(rctx);
  await login(rpage, env.READER_USER, env.READER_TOKEN);
  check(await rpage.$eval("#nav-sessions", (e) => e.hidden), "reader: no Sessions page in the menu");
  for (const hash of ["#/overview", "#/streams", "#/stream/" + env.NEEDLE, "#/log", "#/sessions", "#/groups",
    "#/group/" + encodeURIComponent(env.GROUP)]) {
    await rpage.goto(url + "/" + hash, { waitUntil: "domcontentloaded" });
    await rpage.waitForSelector("h1");
    await rpage.waitForFunction(() => !document.querySelector("main p.muted")?.textContent.startsWith("Loading"));
    const actions = await rpage.$$eval(".admin-action, button.danger:not(#confirm-yes)", (b) => b.length);
    check(actions === 0, `reader sees no admin action on ${hash}`);
  }
  const forged = await rpage.evaluate(async () => {
    const s = await (await fetch("/api/session")).json();
    const r = await fetch("/api/sessions/end", { method: "POST",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": s.csrf }, body: JSON.stringify({ handle: "0.1" }) });
    return r.status;
  });
  check(forged === 403, `reader's forged admin request (with its CSRF token): ${forged}`);
  const noCsrf = await rpage.evaluate(async () => (await fetch("/api/logout", { method: "POST",
    headers: { "Content-Type": "application/json" }, body: "{}" })).status);
  check(noCsrf === 403, `a POST without the CSRF token: ${noCsrf}`);
  const gforged = await rpage.evaluate(async (name) => {
    const s = await (await fetch("/api/session")).json();
    const r = await fetch("/api/group/delete", { method: "POST",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": s.csrf }, body: JSON.stringify({ name }) });
    return r.status;
  }, env.GROUP);
  const still = JSON.parse(esctl("--json", "group", "list").split("\n")[0]).map((g) => g.name);
  check(gforged === 403 && still.includes(env.GROUP), `reader's forged group delete: ${gforged}, the group is still there`);

  // ---- a writer: delete and retention, no tombstone (as on the TCP port)
  const wctx = await browser.createBrowserContext();
  const wpage = await newPage(wctx);
  await login(wpage, env.WRITER_USER, env.WRITER_TOKEN);
  await wpage.goto(url + "/#/stream/" + env.NEEDLE, { waitUntil: "domcontentloaded" });
  await wpage.waitForSelector("#life");
  check((await wpage.$("#stream-delete")) !== null && (await wpage.$("#meta-form")) !== null &&
    (await wpage.$("#stream-tombstone")) === null, "writer: delete and retention offered, tombstone not");
  const wforged = await wpage.evaluate(async (stream) => {
    const s = await (await fetch("/api/session")).json();
    const r = await fetch("/api/stream/tombstone", { method: "POST",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": s.csrf }, body: JSON.stringify({ stream, expected_revision: 2 }) });
    return r.status;
  }, env.NEEDLE);
  check(wforged === 403, `writer's forged tombstone request: ${wforged}`);
  const rforged = await rpage.evaluate(async (stream) => {
    const s = await (await fetch("/api/session")).json();
    const r = await fetch("/api/stream/delete", { method: "POST",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": s.csrf }, body: JSON.stringify({ stream, expected_revision: 2 }) });
    return r.status;
  }, env.NEEDLE);
  check(rforged === 403, `reader's forged delete request: ${rforged}`);

  // ---- logout ends the session
  const before = await page.cookies();
  await page.goto(url + "/#/overview", { waitUntil: "domcontentloaded" });
  await page.waitForSelector("#head");
  await page.click("#logout");
  await page.waitForSelector("#login-form");
  await page.setCookie(...before);
  const after = await page.evaluate(async () => (await fetch("/api/overview")).status);
  check(after === 401, `after logout the old session cookie gets ${after}`);
  check(pageErrors.length === 0, `no page errors (${pageErrors})`);
} catch (e) {
  check(false, "browser test: " + (e.stack || e));
} finally {
  await browser.close();
  rmSync(profile, { recursive: true, force: true });
}
console.log(failed ? `${failed} check(s) failed` : "all checks passed");
process.exit(failed ? 1 : 0);
