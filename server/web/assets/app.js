// esd web console. Plain JavaScript, no libraries. Every piece of data from
// the server (stream ids, types, event data) is put into the page with
// textContent / text nodes only, never as HTML.
"use strict";

const state = { session: null, timer: null, tail: null };
const $ = (id) => document.getElementById(id);

// el("tag", {attr: value, onclick: fn}, child...): children are nodes or
// strings (strings become text nodes).
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k === "class") e.className = v;
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    e.appendChild(typeof c === "string" || typeof c === "number" ? document.createTextNode(String(c)) : c);
  }
  return e;
}

function show(...nodes) {
  const m = $("main");
  m.replaceChildren(...nodes);
}

class HttpError extends Error {
  constructor(status, msg) { super(msg); this.status = status; }
}

async function api(path, body) {
  const opts = { credentials: "same-origin", headers: {} };
  if (body !== undefined) {
    opts.method = "POST";
    opts.headers["Content-Type"] = "application/json";
    if (state.session) opts.headers["X-CSRF-Token"] = state.session.csrf;
    opts.body = JSON.stringify(body);
  }
  const r = await fetch(path, opts);
  let j = null;
  try { j = await r.json(); } catch (e) { j = null; }
  if (r.status === 401 && !path.startsWith("/api/login")) {
    const had = state.session !== null;
    state.session = null;
    renderLogin(had ? "Your session has ended: log in again." : "");
    throw new HttpError(401, "not logged in");
  }
  if (!r.ok) throw new HttpError(r.status, (j && j.error) || r.statusText);
  return j;
}

function qs(params) {
  const u = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== "") u.set(k, v);
  const s = u.toString();
  return s ? "?" + s : "";
}

const fmtInt = (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US"));
function fmtBytes(n) {
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + " " + u[i];
}
function fmtTime(us) {
  if (!us) return "–";
  const d = new Date(us / 1000);
  return d.toISOString().replace("T", " ").replace("Z", " UTC");
}
function fmtUs(us) {
  if (us >= 1000000) return (us / 1000000).toFixed(2) + " s";
  if (us >= 1000) return (us / 1000).toFixed(1) + " ms";
  return Math.round(us) + " µs";
}

// ------------------------------------------------------------------ login --

function renderLogin(msg) {
  stopPage();
  $("nav").hidden = true;
  $("logout").hidden = true;
  $("who").textContent = "";
  const err = el("p", { class: "error", id: "login-error" }, msg || "");
  const form = el("form", { class: "login", id: "login-form" },
    el("h1", {}, "Log in to esd"),
    el("label", { for: "user" }, "User"),
    el("input", { id: "user", name: "user", autocomplete: "username", required: true }),
    el("label", { for: "token" }, "Token"),
    el("input", { id: "token", name: "token", type: "password", autocomplete: "current-password", required: true }),
    el("button", { class: "primary", type: "submit", id: "login-button" }, "Log in"),
    err);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      state.session = await api("/api/login", { user: $("user").value, token: $("token").value });
      $("token").value = "";
      startApp();
    } catch (e) {
      err.textContent = e.status === 429 ? e.message : "Login failed: " + e.message;
    }
  });
  show(form);
}

async function logout() {
  try { await api("/api/logout", {}); } catch (e) { /* the session may be gone already */ }
  state.session = null;
  location.hash = "";
  renderLogin("Logged out.");
}

function askConfirm(text) {
  return new Promise((resolve) => {
    $("confirm-text").textContent = text;
    $("confirm").hidden = false;
    const done = (v) => { $("confirm").hidden = true; $("confirm-yes").onclick = $("confirm-no").onclick = null; resolve(v); };
    $("confirm-yes").onclick = () => done(true);
    $("confirm-no").onclick = () => done(false);
  });
}

// --------------------------------------------------------------- overview --

function card(label, value, sub, id) {
  return el("div", { class: "card" }, el("div", { class: "label" }, label),
    el("div", { class: "value", id: id }, value), sub ? el("div", { class: "sub" }, sub) : null);
}

// A line chart of the series on a canvas: our own few lines, no library.
function drawChart(canvas, t, series) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth, h = canvas.clientHeight;
  canvas.width = w * dpr; canvas.height = h * dpr;
  const g = canvas.getContext("2d");
  g.scale(dpr, dpr);
  g.clearRect(0, 0, w, h);
  const left = 56, right = 10, top = 10, bottom = 24;
  let max = 1;
  for (const s of series) for (const v of s.values) max = Math.max(max, v);
  const pow = Math.pow(10, Math.floor(Math.log10(max)));
  max = Math.ceil(max / pow) * pow;
  const span = 300;
  const x = (ts) => left + (w - left - right) * (1 + ts / span);
  const y = (v) => top + (h - top - bottom) * (1 - v / max);
  g.strokeStyle = "#dde1e8"; g.fillStyle = "#6b7385"; g.font = "11px system-ui"; g.lineWidth = 1;
  for (let i = 0; i <= 4; i++) {
    const v = (max * i) / 4;
    g.beginPath(); g.moveTo(left, y(v)); g.lineTo(w - right, y(v)); g.stroke();
    g.fillText(v >= 1000 ? (v / 1000).toFixed(1) + "k" : String(Math.round(v * 10) / 10), 4, y(v) + 4);
  }
  for (let m = 0; m <= 5; m++) {
    const ts = -m * 60;
    g.fillText(m ? "-" + m + " min" : "now", x(ts) - (m ? 18 : 20), h - 6);
  }
  for (const s of series) {
    g.strokeStyle = s.color; g.lineWidth = 2; g.beginPath();
    s.values.forEach((v, i) => { const px = x(t[i]), py = y(v); if (i) g.lineTo(px, py); else g.moveTo(px, py); });
    g.stroke();
  }
}

async function pageOverview() {
  const cards = el("div", { class: "cards", id: "cards" });
  const canvas = el("canvas", { id: "chart" });
  show(el("h1", {}, "Overview"), cards,
    el("div", { class: "chart" }, el("div", { class: "legend" },
      el("span", { class: "a" }, "appends/s"), el("span", { class: "e" }, "events/s"),
      el("span", { class: "muted" }, "last 5 minutes, one point a second")), canvas));
  let refreshes = 0;
  const refresh = async () => {
    const o = await api("/api/overview");
    cards.dataset.refreshes = ++refreshes;
    const pct = o.map_size ? ((100 * o.map_used) / o.map_size).toFixed(3) + " % of the map" : "";
    const relay = o.relay
      ? card("Relay", o.relay.connected ? "connected" : "disconnected", "acked " + fmtInt(o.relay.acked_position) + ", lag " + fmtInt(o.relay.lag), "relay")
      : card("Relay", "off", "no --relay-nats");
    const follow = o.follow
      ? card("Follower", o.follow.halted ? "halted" : o.follow.connected ? "connected" : "disconnected", "imported " + fmtInt(o.follow.imported) + ", pending " + fmtInt(o.follow.pending), "follow")
      : card("Role", o.role, "store " + o.store_id.slice(0, 8));
    cards.replaceChildren(
      card("Head position", fmtInt(o.head), "last committed event", "head"),
      card("Streams", fmtInt(o.streams), fmtInt(o.events) + " events", "streams"),
      card("Store used", fmtBytes(o.map_used), pct, "store"),
      card("Readers", o.readers_used + " / " + o.readers_max, o.sync ? "sync: full" : "sync: none"),
      card("Connections", fmtInt(o.connections), fmtInt(o.web_sessions) + " web sessions", "connections"),
      card("Subscriptions", fmtInt(o.subscriptions), fmtInt(o.subscriptions_behind) + " behind, max lag " + fmtInt(o.subscription_lag_max), "subscriptions"),
      card("Commit batch", o.commits.batch_avg.toFixed(1), "requests per commit (last minute), max " + fmtInt(o.commits.max_batch)),
      card("Commit latency", fmtUs(o.commits.latency_avg_us), "avg last minute; p99 ≤ " + fmtUs(o.commits.latency_p99_us)),
      card("Appends", fmtInt(o.appends_ok), fmtInt(o.appends_failed) + " failed, " + fmtInt(o.events_appended) + " events"),
      relay, follow,
      card("Uptime", Math.floor(o.uptime_s / 3600) + " h " + Math.floor((o.uptime_s % 3600) / 60) + " min", "esd " + o.version));
    drawChart(canvas, o.series.t_s, [
      { values: o.series.appends_per_s, color: "#2f6fdb" },
      { values: o.series.events_per_s, color: "#e0832f" }]);
  };
  await refresh();
  state.timer = setInterval(() => refresh().catch(() => {}), 1000);
}

// ---------------------------------------------------------------- streams --

async function pageStreams(params) {
  const prefix = params.get("prefix") || "";
  const after = params.get("after") || "";
  const input = el("input", { id: "prefix", placeholder: "stream id prefix", value: prefix, size: 30 });
  const form = el("form", { class: "bar", id: "streams-form" }, input, el("button", { type: "submit", class: "primary" }, "Search"));
  form.addEventListener("submit", (ev) => { ev.preventDefault(); location.hash = "#/streams" + qs({ prefix: input.value }); });
  const body = el("tbody", { id: "streams-body" });
  const pager = el("div", { class: "bar" });
  show(el("h1", {}, "Streams"), form,
    el("table", { id: "streams-table" }, el("thead", {}, el("tr", {}, el("th", {}, "Stream"), el("th", { class: "num" }, "Events"),
      el("th", { class: "num" }, "Last revision"), el("th", {}, "Last update"))), body), pager);
  const r = await api("/api/streams" + qs({ prefix, after, limit: 50 }));
  for (const s of r.streams) {
    body.appendChild(el("tr", {}, el("td", {}, el("a", { href: "#/stream/" + encodeURIComponent(s.id) }, s.id)),
      el("td", { class: "num" }, fmtInt(s.event_count)), el("td", { class: "num" }, fmtInt(s.last_revision)),
      el("td", {}, fmtTime(s.updated_us))));
  }
  if (!r.streams.length) body.appendChild(el("tr", {}, el("td", { colspan: 4, class: "muted" }, "No stream" + (prefix ? " starts with this prefix." : "."))));
  if (after) pager.appendChild(el("a", { href: "#/streams" + qs({ prefix }) }, "« First page"));
  if (r.more) pager.appendChild(el("a", { id: "streams-next", href: "#/streams" + qs({ prefix, after: r.next_after }) }, "Next page »"));
}

// ----------------------------------------------------------------- events --

function payload(p, position) {
  if (!p) return el("span", { class: "muted" }, "none");
  let text = p.text;
  let enc = p.encoding === "hex" ? "hex (not UTF-8)" : "text";
  if (p.encoding === "hex") {
    text = text.replace(/(..)/g, "$1 ").replace(/((?:.. ){16})/g, "$1\n");
  } else if (!p.truncated) {
    try { text = JSON.stringify(JSON.parse(text), null, 2); enc = "JSON"; } catch (e) { /* not JSON: as it is */ }
  }
  const box = el("div", {}, el("pre", { class: "data" }, text));
  const label = el("span", { class: "enc" }, enc + ", " + fmtInt(p.bytes) + " bytes" + (p.truncated ? ", truncated" : ""));
  if (p.truncated && position) {
    box.appendChild(el("button", { type: "button", class: "show-all", onclick: () => { location.hash = "#/event/" + position; } }, "Show all " + fmtInt(p.bytes) + " bytes"));
  }
  return el("div", {}, label, box);
}

// A correlation or causation id: a link to the event it names when the
// server found it (its position), "not found" in plain words when no event
// has that id, and a lookup by id when the server did not say (live tail).
function idLink(label, id, pos) {
  if (!id) return null;
  const cls = label + "-link";
  if (pos === null) {
    return el("span", { class: "meta " + cls }, label + " " + id + " ", el("span", { class: "pill bad notfound" }, "not found"));
  }
  const href = pos === undefined ? "#/find/" + encodeURIComponent(id) : "#/event/" + pos;
  return el("span", { class: "meta " + cls }, label + " ", el("a", { href, title: pos === undefined ? "look this id up" : "position " + pos }, id));
}

function eventView(e, fresh) {
  return el("div", { class: "event" + (fresh ? " fresh" : ""), "data-position": e.position },
    el("div", { class: "head" },
      el("span", { class: "type" }, e.type),
      el("span", {}, el("a", { href: "#/stream/" + encodeURIComponent(e.stream) }, e.stream), " @ revision " + e.revision),
      el("span", { class: "meta" }, "position ", el("a", { href: "#/event/" + e.position }, String(e.position))),
      el("span", { class: "meta" }, fmtTime(e.recorded_at_us)),
      el("span", { class: "meta" }, e.content_type || "no content type")),
    el("div", { class: "head" }, el("span", { class: "meta" }, "id " + e.id), idLink("correlation", e.correlation_id, e.correlation_position), idLink("causation", e.causation_id, e.causation_position)),
    payload(e.data, e.position),
    e.metadata ? el("div", {}, el("span", { class: "meta" }, "metadata"), payload(e.metadata, e.position)) : null);
}

function fmtAge(s) {
  if (!s) return "no limit";
  const units = [[86400, "day"], [3600, "hour"], [60, "minute"], [1, "second"]];
  for (const [n, u] of units) if (s % n === 0) return fmtInt(s / n) + " " + u + (s / n === 1 ? "" : "s");
  return fmtInt(s) + " seconds";
}

// A stream's lifecycle: its state and retention metadata, and for a
// write-role session the changes (delete, set retention; tombstone for an
// admin), each behind a confirmation that names the revision it expects.
function lifePanel(id, r) {
  const l = r.life;
  if (!l) return null; // the store's own '$' streams have no lifecycle
  const s = state.session;
  const last = r.info ? r.info.last_revision : null;
  const status = l.tombstoned ? el("span", { class: "pill bad", id: "life-state" }, "tombstoned")
    : l.deleted ? el("span", { class: "pill bad", id: "life-state" }, "deleted")
      : el("span", { class: "pill ok", id: "life-state" }, "live");
  const msg = el("p", { class: "error", id: "life-msg" }, "");
  const row = (k, v, rid) => el("tr", {}, el("th", {}, k), el("td", { id: rid }, v));
  const table = l.tombstoned ? el("table", { class: "life", id: "life-table" }, row("State", status)) : el("table", { class: "life", id: "life-table" },
    row("State", status),
    row("Truncate before", l.truncate_before ? "revision " + fmtInt(l.truncate_before) : "no limit", "life-truncate"),
    row("Max count", l.max_count ? fmtInt(l.max_count) + " events" : "no limit", "life-max-count"),
    row("Max age", fmtAge(l.max_age_s), "life-max-age"),
    row("Deleted before", l.deleted_before ? "revision " + fmtInt(l.deleted_before) : "–"),
    row("Metadata revision", l.metadata_set ? String(l.metadata_revision) : "none set", "life-meta-rev"));
  const box = el("div", { class: "lifebox", id: "life" }, el("h2", {}, "Lifecycle"), table);
  const change = async (path, body, question) => {
    if (!(await askConfirm(question))) return;
    try {
      await api(path, body);
      route();
    } catch (e) {
      msg.textContent = (e.status === 409 ? "Not changed: someone changed the stream meanwhile. " : "Not changed: ") + e.message;
    }
  };
  if (s && s.write && !l.tombstoned && last !== null) {
    const num = (name, v, label) => el("label", {}, label + " ", el("input", { id: "meta-" + name, name, type: "number", min: 0, value: v, size: 8 }));
    const form = el("form", { class: "bar", id: "meta-form" },
      num("truncate_before", l.truncate_before, "truncate before"),
      num("max_count", l.max_count, "max count"),
      num("max_age_s", l.max_age_s, "max age (s)"),
      el("button", { type: "submit", class: "primary admin-action", id: "meta-set" }, "Set retention…"));
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const v = (n) => Number($("meta-" + n).value || 0);
      const body = { stream: id, expected_metadata_revision: l.metadata_set ? l.metadata_revision : null,
        truncate_before: v("truncate_before"), max_count: v("max_count"), max_age_s: v("max_age_s") };
      change("/api/stream/metadata", body, "Set the retention of " + id + " to: truncate before " + body.truncate_before +
        ", max count " + (body.max_count || "none") + ", max age " + fmtAge(body.max_age_s) +
        "? Events outside it are no longer served. (Expects metadata revision " + (l.metadata_set ? l.metadata_revision : "none") + ".)");
    });
    const actions = el("div", { class: "bar" });
    if (!l.deleted) {
      actions.appendChild(el("button", { type: "button", class: "danger admin-action", id: "stream-delete", onclick: () =>
        change("/api/stream/delete", { stream: id, expected_revision: last },
          "Delete stream " + id + " at revision " + last + "? Its events are no longer served; an append recreates it with revision " + (last + 1) + " onwards.") }, "Delete…"));
    }
    if (s.admin) {
      actions.appendChild(el("button", { type: "button", class: "danger admin-action", id: "stream-tombstone", onclick: () =>
        change("/api/stream/tombstone", { stream: id, expected_revision: last },
          "Tombstone stream " + id + " at revision " + last + "? This cannot be undone: the stream can never be read or appended to again.") }, "Tombstone…"));
    }
    box.append(form, actions);
  }
  box.appendChild(msg);
  return box;
}

async function pageStream(id, params) {
  const from = params.get("from") || "";
  const r = await api("/api/stream" + qs({ id, from, limit: 20 }));
  const list = el("div", { id: "events" }, r.events.map((e) => eventView(e)));
  const pager = el("div", { class: "bar" });
  if (from) pager.appendChild(el("a", { href: "#/stream/" + encodeURIComponent(id) }, "« Newest"));
  if (r.next !== null) pager.appendChild(el("a", { id: "older", href: "#/stream/" + encodeURIComponent(id) + qs({ from: r.next }) }, "Older events »"));
  const summary = r.life && r.life.tombstoned ? "Tombstoned: its events are never served again."
    : !r.info || (r.life && r.life.deleted) ? "Deleted at revision " + (r.info ? r.info.last_revision : "?") + ": no events are served until an append recreates it."
      : fmtInt(r.info.event_count) + (r.info.event_count === 1 ? " event" : " events") + ", last revision " + r.info.last_revision +
        ", created " + fmtTime(r.info.created_us) + ", last update " + fmtTime(r.info.updated_us) + ". Newest first.";
  show(el("h1", { id: "stream-title" }, "Stream " + r.stream),
    el("p", { class: "muted", id: "stream-summary" }, summary),
    lifePanel(id, r), list, pager);
}

async function pageEvent(kind, key) {
  let e;
  try {
    e = await api("/api/event" + (kind === "position" ? qs({ position: key }) : qs({ id: key })));
  } catch (err) {
    if (err.status !== 404) throw err;
    show(el("h1", {}, "Event not found"),
      el("p", { id: "not-found" }, kind === "position" ? "No event is stored at position " + key + "." : "No event has the id " + key + "."),
      el("p", { class: "muted" }, "It may never have been appended, or its stream was deleted or truncated."));
    return;
  }
  const view = eventView(e);
  view.classList.add("full");
  show(el("h1", {}, "Event at position " + e.position), view);
}

// -------------------------------------------------------------------- log --

async function pageLog(params) {
  const kind = params.get("kind") || "";
  const name = params.get("name") || "";
  const from = params.get("from") || "";
  const sel = el("select", { id: "filter-kind" },
    ["", "category", "type", "prefix"].map((k) => el("option", { value: k, selected: k === kind }, k || "all events")));
  const input = el("input", { id: "filter-name", placeholder: "category, event type or stream prefix", value: name, size: 30 });
  const tailBox = el("input", { type: "checkbox", id: "live" });
  const status = el("span", { class: "muted", id: "tail-status" }, "");
  const form = el("form", { class: "bar", id: "log-form" }, sel, input, el("button", { type: "submit", class: "primary" }, "Filter"),
    el("label", {}, tailBox, " live tail"), status);
  form.addEventListener("submit", (ev) => { ev.preventDefault(); location.hash = "#/log" + qs({ kind: sel.value, name: sel.value ? input.value : "" }); });
  const list = el("div", { id: "events" });
  const pager = el("div", { class: "bar" });
  // The page is shown only once its events are here, so that the live-tail
  // box never exists without its change listener (a click in between did
  // nothing).
  const filter = kind && name ? { [kind]: name } : {};
  const r = await api("/api/log" + qs({ ...filter, from, limit: 50 }));
  show(el("h1", {}, "Global log"), form, list, pager);
  for (const e of r.events) list.appendChild(eventView(e));
  if (!r.events.length) list.appendChild(el("p", { class: "muted", id: "no-events" }, "No events."));
  if (r.next !== null) pager.appendChild(el("a", { id: "older", href: "#/log" + qs({ kind, name, from: r.next }) }, "Older events »"));
  tailBox.addEventListener("change", () => {
    if (state.tail) { state.tail.close(); state.tail = null; }
    if (!tailBox.checked) { status.textContent = ""; return; }
    const es = new EventSource("/api/tail" + qs({ ...filter, from: r.head + 1 }));
    state.tail = es;
    es.onopen = () => { status.textContent = "live"; };
    es.onerror = () => { status.textContent = "reconnecting…"; };
    es.addEventListener("event", (m) => {
      const e = JSON.parse(m.data);
      const none = $("no-events");
      if (none) none.remove();
      list.insertBefore(eventView(e, true), list.firstChild);
      while (list.children.length > 500) list.lastChild.remove();
    });
  });
}

// ---------------------------------------------------------------- groups --

function fmtMs(ms) {
  return ms % 1000 === 0 ? fmtInt(ms / 1000) + " s" : fmtInt(ms) + " ms";
}

function targetText(g) {
  return g.target === "all" ? "the whole log" : g.target + " " + g.target_name;
}

function settingsText(st) {
  if (!st) return "–";
  return "ack timeout " + fmtMs(st.ack_timeout_ms) + " · " + fmtInt(st.max_retries) + " retries · " +
    fmtInt(st.max_in_flight) + " in flight per member" + (st.park_blocks ? " · parked events block their stream" : "");
}

const groupHref = (name) => "#/group/" + encodeURIComponent(name);

function parkedPill(n, id) {
  return el("span", { class: "pill " + (n ? "bad" : "ok"), id }, fmtInt(n));
}

async function pageGroups() {
  const body = el("tbody", { id: "groups-body" });
  const summary = el("p", { class: "muted", id: "groups-summary" }, "");
  const th = (t, num) => el("th", { class: num ? "num" : null }, t);
  show(el("h1", {}, "Consumer groups"), summary,
    el("table", { id: "groups-table" }, el("thead", {}, el("tr", {}, th("Group"), th("Target"),
      th("Checkpoint", true), th("Lag", true), th("Members", true), th("In flight", true), th("Parked", true),
      th("Acked", true), th("Retries", true), th("Settings"))), body));
  let refreshes = 0;
  const refresh = async () => {
    let r;
    try {
      r = await api("/api/groups");
    } catch (e) {
      if (e.status !== 409) throw e;
      stopPage(); // a follower: groups live on the primary
      summary.className = "error";
      summary.id = "groups-error";
      summary.textContent = "No consumer groups here: " + e.message + ".";
      return;
    }
    body.dataset.refreshes = ++refreshes;
    const num = (v) => el("td", { class: "num" }, fmtInt(v));
    body.replaceChildren(...r.groups.map((g) => el("tr", {},
      el("td", {}, el("a", { href: groupHref(g.name) }, g.name)),
      el("td", {}, targetText(g)),
      num(g.checkpoint), num(g.lag), num(g.members), num(g.in_flight),
      el("td", { class: "num" }, parkedPill(g.parked)), num(g.acked), num(g.retries),
      el("td", { class: "muted" }, settingsText(g.settings)))));
    if (!r.groups.length) {
      body.appendChild(el("tr", {}, el("td", { colspan: 10, class: "muted", id: "no-groups" },
        "No consumer group yet: esctl group create NAME --category C makes one (docs/groups.md).")));
    }
    summary.textContent = fmtInt(r.groups.length) + (r.groups.length === 1 ? " group" : " groups") +
      "; head position " + fmtInt(r.head) + ". Lag: events of the log above the group's checkpoint. Refreshed every second.";
  };
  await refresh();
  state.timer = setInterval(() => refresh().catch(() => {}), 1000);
}

async function pageGroup(name, params) {
  const after = params.get("after") || "";
  let g;
  try {
    g = await api("/api/group" + qs({ name }));
  } catch (err) {
    if (err.status !== 404) throw err;
    show(el("h1", {}, "Group not found"),
      el("p", { id: "not-found" }, "No consumer group is named " + name + "."),
      el("p", {}, el("a", { href: "#/groups" }, "All groups")));
    return;
  }
  const p = await api("/api/group/parked" + qs({ name, after, limit: 50 }));
  const s = state.session;
  const cards = el("div", { class: "cards", id: "group-cards" });
  const members = el("tbody", { id: "members-body" });
  const msg = el("p", { class: "muted", id: "group-msg" }, "");
  const setting = (k, v, rid) => el("tr", {}, el("th", {}, k), el("td", { id: rid }, v));
  const settingsBox = el("div", { class: "lifebox", id: "group-settings" }, el("h2", {}, "Settings"),
    el("table", { class: "life" },
      setting("Target", targetText(g), "group-target"),
      setting("Ack timeout", fmtMs(g.settings.ack_timeout_ms), "group-ack-timeout"),
      setting("Max retries", fmtInt(g.settings.max_retries) + " (parked after " + fmtInt(g.settings.max_retries + 1) + " deliveries)", "group-max-retries"),
      setting("Max in flight", fmtInt(g.settings.max_in_flight) + " per member", "group-max-in-flight"),
      setting("Parked events", g.settings.park_blocks ? "block their stream until replayed and acked" : "do not block their stream", "group-park-blocks")));
  let cur = g; // the latest figures, for the confirmations
  const draw = (g) => {
    cur = g;
    const replay = $("group-replay");
    if (replay) replay.disabled = !g.parked;
    cards.replaceChildren(
      card("Checkpoint", fmtInt(g.checkpoint), "every event at or below it is done", "group-checkpoint"),
      card("Lag", fmtInt(g.lag), "events: head " + fmtInt(g.head) + " − checkpoint", "group-lag"),
      card("Members", fmtInt(g.members), null, "group-members"),
      card("In flight", fmtInt(g.in_flight), "delivered, not yet acked", "group-in-flight"),
      card("Parked", fmtInt(g.parked), g.parked ? "waiting for a replay" : "none", "group-parked"),
      card("Acked", fmtInt(g.acked), fmtInt(g.retries) + " redeliveries (since esd started)", "group-acked"));
    const rows = g.member_list.map((m) => el("tr", {},
      el("td", {}, m.consumer || "(no label)"), el("td", {}, m.user || "–"), el("td", {}, m.peer || "–"),
      el("td", { class: "num" }, String(m.connection)),
      el("td", { class: "num" }, fmtInt(m.in_flight) + " / " + fmtInt(m.max_in_flight))));
    if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: 5, class: "muted", id: "no-members" }, "No member is connected.")));
    members.replaceChildren(...rows);
  };
  draw(g);
  const actions = el("div", { class: "bar", id: "group-actions" });
  const change = async (path, question, done) => {
    if (!(await askConfirm(question))) return;
    try {
      done(await api(path, { name }));
    } catch (e) {
      msg.className = "error";
      msg.textContent = "Not done: " + e.message;
    }
  };
  if (s && s.admin) {
    actions.append(
      el("button", { type: "button", class: "admin-action", id: "group-replay", disabled: !g.parked, onclick: () =>
        change("/api/group/replay", "Replay the " + fmtInt(cur.parked) + " parked events of group " + name +
          "? They are delivered to its members again (one per stream at a time); acked, they leave the parked list.",
          (r) => { route().then(() => { const m = $("group-msg"); if (m) m.textContent = fmtInt(r.replayed) + " parked events put back for delivery."; }); }) },
      "Replay parked…"),
      el("button", { type: "button", class: "danger admin-action", id: "group-delete", onclick: () =>
        change("/api/group/delete", "Delete consumer group " + name + "? Its checkpoint and its " + fmtInt(cur.parked) +
          " parked events are removed and its " + fmtInt(cur.members) + " members are told to leave. This cannot be undone.",
          () => { location.hash = "#/groups"; }) },
      "Delete group…"));
  }
  const prow = (e) => el("tr", { "data-position": e.position },
    el("td", { class: "num" }, el("a", { href: "#/event/" + e.position }, String(e.position))),
    el("td", {}, el("a", { href: "#/stream/" + encodeURIComponent(e.stream) }, e.stream)),
    el("td", { class: "num" }, e.revision === null ? el("span", { class: "pill bad", title: "the log no longer serves this event" }, "not served") : String(e.revision)),
    el("td", {}, e.type === null ? "–" : e.type),
    el("td", { class: "num" }, fmtInt(e.attempts)),
    el("td", { class: "reason" }, e.reason),
    el("td", { class: "muted" }, fmtTime(e.parked_at_us)));
  const parkedBody = el("tbody", { id: "parked-body" }, p.events.map(prow));
  if (!p.events.length) parkedBody.appendChild(el("tr", {}, el("td", { colspan: 7, class: "muted", id: "no-parked" }, after ? "No more parked events." : "No parked event.")));
  const pager = el("div", { class: "bar" });
  if (after) pager.appendChild(el("a", { id: "parked-first", href: groupHref(name) }, "« First page"));
  if (p.more) pager.appendChild(el("a", { id: "parked-next", href: groupHref(name) + qs({ after: p.next_after }) }, "Next page »"));
  const th = (t, num) => el("th", { class: num ? "num" : null }, t);
  show(el("h1", { id: "group-title" }, "Group " + g.name),
    el("p", { class: "muted" }, el("a", { href: "#/groups" }, "All groups"), " · reads " + targetText(g) + "; figures refreshed every 2 seconds."),
    cards, actions, msg, settingsBox,
    el("h2", {}, "Members"),
    el("table", { id: "members-table" }, el("thead", {}, el("tr", {}, th("Consumer"), th("User"), th("Address"), th("Connection", true), th("In flight", true))), members),
    el("h2", { id: "parked-title" }, "Parked events" + (after ? " after position " + after : "") +
      " (" + fmtInt(g.parked) + " in all; oldest first)"),
    el("table", { id: "parked-table" }, el("thead", {}, el("tr", {}, th("Position", true), th("Stream"), th("Revision", true), th("Type"),
      th("Deliveries", true), th("Reason"), th("Parked at"))), parkedBody),
    pager);
  let refreshes = 0;
  state.timer = setInterval(async () => {
    try {
      const fresh = await api("/api/group" + qs({ name }));
      draw(fresh);
      cards.dataset.refreshes = ++refreshes;
    } catch (e) {
      if (e.status === 404) { stopPage(); msg.className = "error"; msg.textContent = "This group no longer exists."; }
    }
  }, 2000);
}

// --------------------------------------------------------------- sessions --

async function pageSessions() {
  const r = await api("/api/sessions");
  const body = el("tbody", {});
  for (const s of r.sessions) {
    const end = el("button", { type: "button", class: "danger admin-action", onclick: async () => {
      if (!(await askConfirm("End the web session of " + (s.user || "(anonymous)") + "? Its tab will be asked to log in again."))) return;
      try { await api("/api/sessions/end", { handle: s.handle }); route(); } catch (e) { show(el("p", { class: "error", id: "page-error" }, "Could not end it: " + e.message)); }
    } }, "End session");
    body.appendChild(el("tr", {}, el("td", {}, s.user || "(anonymous)"), el("td", {}, s.role),
      el("td", { class: "num" }, fmtInt(s.age_s) + " s"), el("td", { class: "num" }, fmtInt(s.idle_s) + " s"),
      el("td", {}, s.current ? el("span", { class: "pill ok" }, "this session") : end)));
  }
  show(el("h1", {}, "Web sessions"), el("p", { class: "muted" }, "Admin only. Ending a session logs its user out of the console."),
    el("table", { id: "sessions-table" }, el("thead", {}, el("tr", {}, el("th", {}, "User"), el("th", {}, "Role"),
      el("th", { class: "num" }, "Age"), el("th", { class: "num" }, "Idle"), el("th", {}, ""))), body));
}

// ---------------------------------------------------------------- routing --

function stopPage() {
  if (state.timer) { clearInterval(state.timer); state.timer = null; }
  if (state.tail) { state.tail.close(); state.tail = null; }
}

async function route() {
  stopPage();
  if (!state.session) return;
  const hash = location.hash.replace(/^#/, "") || "/overview";
  const q = hash.indexOf("?");
  const path = q < 0 ? hash : hash.slice(0, q);
  const params = new URLSearchParams(q < 0 ? "" : hash.slice(q + 1));
  const parts = path.split("/").filter(Boolean);
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.dataset.page === parts[0] || (a.dataset.page === "groups" && parts[0] === "group"));
  try {
    if (parts[0] === "overview") await pageOverview();
    else if (parts[0] === "streams") await pageStreams(params);
    else if (parts[0] === "stream" && parts[1]) await pageStream(decodeURIComponent(parts.slice(1).join("/")), params);
    else if (parts[0] === "log") await pageLog(params);
    else if (parts[0] === "event" && parts[1]) await pageEvent("position", parts[1]);
    else if (parts[0] === "find" && parts[1]) await pageEvent("id", decodeURIComponent(parts[1]));
    else if (parts[0] === "groups") await pageGroups();
    else if (parts[0] === "group" && parts[1]) await pageGroup(decodeURIComponent(parts.slice(1).join("/")), params);
    else if (parts[0] === "sessions") await pageSessions();
    else show(el("h1", {}, "Not found"), el("p", {}, el("a", { href: "#/overview" }, "Overview")));
  } catch (e) {
    if (e.status !== 401) show(el("h1", {}, "Error"), el("p", { class: "error", id: "page-error" }, e.message));
  }
}

function startApp() {
  const s = state.session;
  $("nav").hidden = false;
  $("nav-sessions").hidden = !s.admin;
  $("logout").hidden = !s.auth;
  $("who").textContent = s.auth ? s.user + " (" + s.role + ")" : "no authentication (loopback)";
  route();
}

async function boot() {
  $("logout").addEventListener("click", logout);
  window.addEventListener("hashchange", route);
  try {
    state.session = await api("/api/session");
    startApp();
  } catch (e) {
    if (e.status !== 401) show(el("p", { class: "error" }, "Cannot reach esd: " + e.message));
  }
}

boot();
