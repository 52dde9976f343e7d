// forensix investigation UI. Every page fetches its JSON twin (the same path + ".json",
// the same query string) and draws it; nothing here computes what the API did not serve.
// Data is put into the page as text (textContent), never as HTML.
"use strict";

const main = document.getElementById("main");
const VIEW = location.pathname.split("/")[1] || "overview";
const JSON_URL = location.pathname + ".json" + location.search;
const PARAMS = new URLSearchParams(location.search);

// -- small DOM helpers ---------------------------------------------------------------
function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "cls") el.className = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const k of kids.flat()) {
    if (k === null || k === undefined) continue;
    el.append(k instanceof Node ? k : document.createTextNode(String(k)));
  }
  return el;
}
const link = (href, text) => h("a", { href }, text);
const q = (obj) => new URLSearchParams(Object.entries(obj).filter(([, v]) => v !== null && v !== undefined && v !== "")).toString();
const procLink = (eid, text) => (eid ? link("/process/" + eid, text || eid) : "");
const fileLink = (p) => (p ? link("/file?" + q({ path: p }), p) : "");
const short = (ts) => (ts ? ts.replace("T", " ").replace("Z", "") : "");
const args = (a) => (Array.isArray(a) ? a.join(" ") : a || "");

function section(title, ...kids) { return h("section", {}, h("h2", {}, title), ...kids); }

// a table: cols = [[header, row => cell]]
function table(rows, cols, opts) {
  if (!rows || !rows.length) return h("p", { cls: "muted" }, (opts && opts.empty) || "nothing recorded");
  return h("table", { cls: (opts && opts.cls) || "" },
    h("thead", {}, h("tr", {}, cols.map(([t]) => h("th", {}, t)))),
    h("tbody", {}, rows.map((r) => h("tr", (opts && opts.rowAttrs) ? opts.rowAttrs(r) : {},
      cols.map(([, f]) => h("td", {}, f(r)))))));
}

function pager(d, count) {
  const off = d.offset || 0, lim = d.limit || 100;
  const go = (o) => { const p = new URLSearchParams(location.search); p.set("offset", o); return location.pathname + "?" + p; };
  return h("p", { cls: "pager" },
    off > 0 ? link(go(Math.max(0, off - lim)), "« previous") : "",
    ` rows ${off + 1}–${off + count}` + (d.total !== undefined ? ` of ${d.total} ` : " "),
    (d.total !== undefined ? off + count < d.total : count === lim) ? link(go(off + lim), "next »") : "");
}

// a GET form whose fields become the view's URL (an empty field is left out)
function form(fields, extra) {
  const f = h("form", { method: "get", cls: "filters" }, fields, h("button", { type: "submit" }, "apply"), extra || "");
  f.addEventListener("submit", (e) => {
    e.preventDefault();
    const p = new URLSearchParams();
    for (const [k, v] of new FormData(f)) if (v !== "") p.append(k, v);
    location.href = location.pathname + (p.toString() ? "?" + p : "");
  });
  return f;
}
const field = (name, label, attrs) => h("label", {}, label, " ", h("input", Object.assign({ name, value: PARAMS.get(name) || "" }, attrs || {})));
function checks(name, choices) {
  const on = new Set(PARAMS.getAll(name));
  return h("span", { cls: "checks" }, choices.map((c) => h("label", {}, h("input", { type: "checkbox", name, value: c, checked: on.has(c) }), c)));
}

async function getJSON(url) {
  const r = await fetch(url, { headers: { Accept: "application/json" } });
  const d = await r.json().catch(() => ({ error: `HTTP ${r.status}` }));
  if (!r.ok) throw Object.assign(new Error(d.error || `HTTP ${r.status}`), { hint: d.hint, status: r.status });
  return d;
}

function showError(e) {
  main.replaceChildren(h("div", { cls: "error" }, h("strong", {}, e.status ? `${e.status}: ` : "", e.message),
    e.hint ? h("p", {}, "hint: " + e.hint) : ""));
}

// -- charts (uPlot) --------------------------------------------------------------------
// events per bucket as bars; gaps (lost events) as red bands on the time axis; optional brush
// (opts.onBrush(fromIso, toIso)). Each bar stands over the time its bucket counts (drawn at
// the bucket's middle), and a brush selects every bucket it touches, whole and to the ns:
// a window cut at the brush's own ms would round away events of the bars it was drawn over.
function histogram(hist, opts) {
  const box = h("div", { cls: "chart" });
  if (!hist || !hist.t_ms || !hist.t_ms.length) { box.append(h("p", { cls: "muted" }, "no events")); return box; }
  const n = hist.t_ms.length, t0 = hist.t_ms[0], w = hist.bucket_ms;
  const xs = hist.t_ms.map((t) => (t + w / 2) / 1000), gaps = (opts && opts.gaps) || [];
  const bucketOf = (ms) => Math.min(n - 1, Math.max(0, Math.floor((ms - t0) / w)));
  const brushed = (aMs, bMs) => {  // the touched buckets' window, as exact ISO times
    const i0 = bucketOf(aMs), i1 = Math.max(i0, bucketOf(bMs));
    const from = BigInt(hist.from_ns), bw = BigInt(hist.bucket_ns);
    opts.onBrush(isoOfNs(from + BigInt(i0) * bw), isoOfNs(from + BigInt(i1 + 1) * bw - 1n));
  };
  const bands = (u) => {
    const c = u.ctx;
    c.save(); c.fillStyle = "rgba(200,0,0,0.35)";
    for (const g of gaps) {
      const x0 = u.valToPos(g.from_ms / 1000, "x", true), x1 = u.valToPos(g.to_ms / 1000, "x", true);
      c.fillRect(x0, u.bbox.top, Math.max(2, x1 - x0), u.bbox.height);
    }
    c.restore();
  };
  const plotOpts = {
    width: Math.min(1100, window.innerWidth - 60), height: 160,
    scales: { x: { time: true, range: () => [t0 / 1000, (t0 + n * w) / 1000] } }, legend: { show: false },
    tzDate: (s) => uPlot.tzDate(new Date(s * 1000), "Etc/UTC"),  // the axis in UTC, as every time on the page
    cursor: { drag: { x: !!(opts && opts.onBrush), y: false } },
    series: [{}, { label: "events", stroke: "#345", fill: "rgba(50,80,120,0.35)", paths: uPlot.paths.bars({ size: [0.9, 40] }) }],
    axes: [{}, { size: 50 }],
    hooks: { draw: [bands], setSelect: [(u) => {
      if (!(opts && opts.onBrush) || u.select.width < 2) return;
      brushed(u.posToVal(u.select.left, "x") * 1000, u.posToVal(u.select.left + u.select.width, "x") * 1000);
    }] },
  };
  requestAnimationFrame(() => new uPlot(plotOpts, [xs, hist.count], box));
  return box;
}
// UTC ns (a BigInt) as ISO 8601 with all nine digits (Date keeps only ms)
const isoOfNs = (ns) => new Date(Number(ns / 1000000000n) * 1000).toISOString().replace(".000Z", "." + String(ns % 1000000000n).padStart(9, "0") + "Z");

// -- live updates ----------------------------------------------------------------------
// While a recording runs the store grows: the server pushes what arrived (server-sent
// events, /live/stream; where the stream cannot be held, ask /live.json every 2 s), the
// header says so, and the views that show the latest data are redrawn (without a reload).
const LIVE_VIEWS = new Set(["overview", "alerts", "timeline"]);
let liveSince = null;
function onLive(d) {
  const el = document.getElementById("live");
  if (liveSince !== null && (d.new_events > 0 || d.new_alerts.length)) {
    el.textContent = `● live: +${d.new_events} events, +${d.new_alerts.length} alerts` +
      (d.new_alerts.length ? ` (latest: ${d.new_alerts[0].rule_title || d.new_alerts[0].rule_id})` : "");
    el.className = "on";
    if (LIVE_VIEWS.has(VIEW) && !PARAMS.get("after") && !PARAMS.get("offset")) load();
  } else if (liveSince !== null) {
    el.className = "";
    el.textContent = `latest event ${short(d.latest)}`;
  }
  liveSince = { events: d.events, alerts: d.alerts };
}
async function poll() {
  try {
    const d = await getJSON("/live.json" + (liveSince !== null ? "?" + q(liveSince) : ""));
    // the stream's first answer is its own cursor: the counts are the same, nothing new
    onLive(d);
  } catch (e) { /* the next poll tries again */ }
}
function startPolling() {
  document.getElementById("live").dataset.via = "poll";
  poll();
  setInterval(poll, 2000);
}
function startLive() {
  if (typeof EventSource === "undefined") return startPolling();
  const es = new EventSource("/live/stream");
  let opened = false;
  es.addEventListener("open", () => { opened = true; document.getElementById("live").dataset.via = "sse"; });
  es.addEventListener("message", (m) => { try { onLive(JSON.parse(m.data)); } catch (e) { /* a bad line: skip it */ } });
  // never opened (a proxy that buffers, an old server): poll instead; a dropped stream
  // is opened again by the browser itself
  es.addEventListener("error", () => { if (!opened) { es.close(); startPolling(); } });
}

// -- views -----------------------------------------------------------------------------
// a view that comes in parts: this view's JSON twin with part=NAME
const partURL = (name) => location.pathname + ".json?" + (location.search.slice(1) ? location.search.slice(1) + "&" : "") + "part=" + name;

const VIEWS = {};

VIEWS.overview = (d) => [
  h("h1", {}, "Overview ", h("small", {}, d.store)),
  h("p", {}, `${d.events} events, ${d.processes} processes, ${d.alerts} alerts; `,
    d.gaps_total ? h("span", { cls: "bad" }, `${d.gaps_total} gaps, ${d.events_lost} events lost`) : "no recorded loss"),
  section("Recording coverage", h("p", { cls: "muted" }, `events over time, ${short(d.coverage.from)} – ${short(d.coverage.to)} UTC; red: gaps (lost events). Drag to open the timeline there.`),
    histogram(d.coverage, { gaps: d.gaps, onBrush: (a, b) => { location.href = "/timeline?" + q({ from: a, to: b }); } })),
  section("Hosts", table(d.recorded, [["host", (r) => r.host_name], ["host id", (r) => r.host_id],
    ["kernel", (r) => (d.hosts.find((x) => x.host_id === r.host_id) || {}).kernel || ""], ["first event", (r) => short(r.first_ts)],
    ["last event", (r) => short(r.last_ts)], ["events", (r) => r.events]])),
  section("Alerts by rule", table(d.alerts_by_rule, [["level", (r) => h("span", { cls: "lvl " + r.rule_level }, r.rule_level)],
    ["rule", (r) => link("/alerts?" + q({ rule: r.rule_id }), r.rule_title || r.rule_id)], ["alerts", (r) => r.alerts], ["latest", (r) => short(r.last_ts)]],
    { empty: "no alerts" })),
  d.gaps.length ? section("Gaps", table(d.gaps, [["from", (r) => short(r.ts_from)], ["to", (r) => short(r.ts_to)], ["class", (r) => r.event_class],
    ["cpu", (r) => r.cpu], ["lost", (r) => r.count], ["reason", (r) => r.reason]])) : "",
];

VIEWS.alerts = (d) => [
  h("h1", {}, "Alerts"),
  form([h("label", {}, "level ", checks("level", d.levels)),
    h("label", {}, "rule ", h("select", { name: "rule" }, h("option", { value: "" }, "any"),
      d.rules.map((r) => h("option", { value: r, selected: PARAMS.get("rule") === r }, r)))),
    field("host", "host", { size: 10 }), field("from", "from", { size: 22, placeholder: "2026-11-26T05:00Z or -1h" }),
    field("to", "to", { size: 22 })]),
  table(d.alerts, [["time", (r) => short(r.ts)], ["level", (r) => h("span", { cls: "lvl " + r.rule_level }, r.rule_level)],
    ["rule", (r) => r.rule_title || r.rule_id], ["host", (r) => r.host_name], ["process", (r) => procLink(r.process_entity_id, r.process_pid)],
    ["user", (r) => r.user_name || ""], ["object", (r) => (r.object_kind === "file" ? fileLink(r.object_name) : r.object_name || "")],
    ["count", (r) => r.alert_count || 1], ["entry", (r) => [r.entry_kind, r.entry_source_ip].filter((x) => x).join(" from ")],
    ["summary", (r) => r.summary], ["", (r) => link("/incident?" + q({ alert: r.alert_id }), "incident »")]],
  { empty: "no alerts match", cls: "alerts" }),
  pager(d, d.alerts.length),
];

VIEWS.search = (d) => [
  h("h1", {}, "Search ", h("small", {}, d.q)),
  d.q ? h("p", { cls: "muted" }, "read as: " + (d.kinds.join(", ") || "nothing")) : h("p", {}, "Type a path, pid, entity id, command, IP address or hash in the box above."),
  table(d.results, [["kind", (r) => r.kind], ["match", (r) => r.match], ["", (r) => (r.url ? link(r.url, r.label) : r.label)],
    ["", (r) => r.detail], ["time", (r) => short(r.ts)]], { empty: "nothing matches" }),
];

VIEWS.sessions = (d) => [
  h("h1", {}, "Sessions"),
  form([h("label", {}, "kind ", checks("kind", d.kinds))]),
  table(d.sessions, [["kind", (r) => r.kind], ["session", (r) => link("/session/" + r.leader_entity_id, r.description)],
    ["user", (r) => `${r.user_name || ""}(${r.user_id})`], ["source", (r) => (r.source_ip ? `${r.source_ip}:${r.source_port}` : "")],
    ["tty", (r) => r.tty], ["start", (r) => short(r.start_ts)], ["end", (r) => short(r.end_ts)], ["processes", (r) => r.processes],
    ["su/sudo", (r) => (r.transitions || []).join(", ")]]),
  pager(d, d.sessions.length),
];

// a user as its host named it then: name(uid), marked * when the name is not the host's own as of
// then (analysis.users); the bare uid when no name is known
function user(name, uid, source) {
  if (uid === null || uid === undefined) return "?";
  const shown = name ? `${name}(${uid})` : `${uid}`;
  return source && source !== "recorded" ? shown + "*" : shown;
}

// an indented process tree; click a process to see its details beside
function processTree(rows, onPick) {
  return h("ul", { cls: "ptree" }, rows.map((r) => h("li", { style: `padding-left:${r.depth * 1.2}em`, "data-entity": r.entity_id },
    h("a", { href: "/process/" + r.entity_id, onclick: onPick ? (e) => { e.preventDefault(); onPick(r.entity_id); } : null },
      (r.executable || "?").split("/").pop(), ` [${r.pid}]`),
    " ", h("span", { cls: "muted" }, args(r.args).slice(0, 120)), " ",
    h("span", { cls: "when" }, short(r.start_ts), r.end_ts ? " → " + short(r.end_ts) : " (running)",
      r.exit_code ? ` exit ${r.exit_code}` : "", " ", user(r.user_name, r.user_id, r.user_name_source)))));
}

// a process's details; compact: the panel beside a tree (~30% of the page), where a table of
// seven columns broke timestamps and uids mid-number: each image, file, socket and child is a
// short block instead, the long text (argv, paths) wrapping and the short (times, uids) not
function processDetails(d, compact) {
  const last = d.images[d.images.length - 1] || {};
  const when = (ts) => h("span", { cls: "when" }, short(ts));
  const ids = (r) => `uid ${user(r.user_name, r.user_id, r.user_name_source)} euid ${user(r.user_effective_name, r.user_effective_id, r.user_effective_name_source)}`;
  const list = (rows, item, empty) => (rows && rows.length ? h("ul", { cls: "items" }, rows.map((r) => h("li", {}, ...item(r))))
    : h("p", { cls: "muted" }, empty || "none"));
  const images = compact
    ? list(d.images, (r) => [`#${r.image_seq} `, when(r.image_ts), " ", h("b", {}, r.executable || "?"),
      h("div", {}, h("code", {}, args(r.args))),
      h("div", { cls: "muted" }, "cwd ", h("code", {}, r.working_directory || "?"), h("span", { cls: "ids" }, " · " + ids(r)))], "nothing recorded")
    : table(d.images, [["#", (r) => r.image_seq], ["time", (r) => short(r.image_ts)], ["executable", (r) => r.executable],
      ["argv", (r) => args(r.args)], ["cwd", (r) => r.working_directory], ["uid", (r) => user(r.user_name, r.user_id, r.user_name_source)],
      ["euid", (r) => user(r.user_effective_name, r.user_effective_id, r.user_effective_name_source)]]);
  const changes = compact
    ? list(d.credential_changes, (r) => [when(r.ts), ` ${r.event_action} → `, h("span", { cls: "ids" }, ids(r)), ` ret ${r.ret}`])
    : table(d.credential_changes, [["time", (r) => short(r.ts)], ["call", (r) => r.event_action],
      ["uid", (r) => user(r.user_name, r.user_id, r.user_name_source)],
      ["euid", (r) => user(r.user_effective_name, r.user_effective_id, r.user_effective_name_source)], ["ret", (r) => r.ret]], { empty: "none" });
  const files = compact
    ? list(d.files, (r) => [when(r.first_ts), " ", (r.actions || []).join(" "),
      ...[["read", r.bytes_read], ["written", r.bytes_written]].filter(([, n]) => n).map(([k, n]) => h("span", { cls: "ids" }, ` · ${k} ${n} B`)),
      h("div", {}, fileLink(r.file_path))])
    : table(d.files, [["first", (r) => short(r.first_ts)], ["path", (r) => fileLink(r.file_path)],
      ["actions", (r) => (r.actions || []).join(" ")], ["read", (r) => r.bytes_read], ["written", (r) => r.bytes_written]], { empty: "none" });
  const peer = (r) => `${r.peer_ip || ""}${r.peer_port ? ":" + r.peer_port : ""}`;
  const sockets = compact
    ? list(d.sockets, (r) => [when(r.first_ts), ` ${r.event_action} `, h("code", {}, peer(r)), ` ${r.network_transport || ""} ×${r.connections}`])
    : table(d.sockets, [["first", (r) => short(r.first_ts)], ["action", (r) => r.event_action],
      ["peer", peer], ["transport", (r) => r.network_transport], ["count", (r) => r.connections]], { empty: "none" });
  const children = compact
    ? list(d.children, (r) => [when(r.start_ts), " ", procLink(r.entity_id, `${(r.executable || "?")} [${r.pid}]`), h("div", {}, h("code", {}, args(r.args)))])
    : table(d.children, [["start", (r) => short(r.start_ts)], ["process", (r) => procLink(r.entity_id, `${(r.executable || "?")} [${r.pid}]`)],
      ["argv", (r) => args(r.args)]], { empty: "none" });
  return h("div", { cls: "details" + (compact ? " compact" : "") },
    h("h3", {}, (last.executable || "?"), ` [${d.pid}] `, link("/process/" + d.entity_id, d.entity_id)),
    h("p", {}, h("code", {}, args(last.args))),
    h("p", {}, "cwd ", h("code", {}, last.working_directory || "?"), `, uid ${user(last.user_name, last.user_id, last.user_name_source)} euid ${user(last.user_effective_name, last.user_effective_id, last.user_effective_name_source)}, loginuid ${last.user_audit_id}`,
      d.end ? `, ended ${short(d.end.end_ts)} exit ${d.end.exit_code}` : ", running"),
    h("p", {}, link("/timeline?" + q({ entity: d.entity_id }), "its events"), " · ",
      link("/incident?" + q({ target: d.entity_id }), "incident graph"), " · ",
      d.session ? link("/session/" + d.session, `its ${d.session_kind} session`) : ""),
    h("h4", {}, "Images (exec)"), images, h("h4", {}, "User changes"), changes, h("h4", {}, "Files"), files,
    h("h4", {}, "Sockets"), sockets, h("h4", {}, "Children"), children);
}

// -- a terminal: the player (asciinema-player, loaded only where a recording is shown) and the text
let playerLib = null;
function loadPlayer() {
  if (!playerLib) playerLib = new Promise((ok, fail) => {
    document.head.append(h("link", { rel: "stylesheet", href: "/static/vendor/asciinema-player.css" }));
    const s = h("script", { src: "/static/vendor/asciinema-player.min.js" });
    s.addEventListener("load", () => ok(window.AsciinemaPlayer));
    s.addEventListener("error", () => { playerLib = null; fail(new Error("the terminal player did not load (run scripts/setup.sh)")); });
    document.head.append(s);
  });
  return playerLib;
}

// the commands typed, each with the output that followed; masked input as masked
function transcriptView(t) {
  if (!t.steps.length) return h("p", { cls: "muted" }, "no command typed (output only)");
  return h("div", { cls: "transcript" }, t.steps.map((s) => h("div", { cls: "step " + s.kind },
    h("span", { cls: "when" }, short(s.ts).slice(11)), " ",
    s.kind === "masked" ? [h("code", {}, s.text), h("span", { cls: "muted" }, " typed with echo off (a password?): not recorded")]
      : h("code", { cls: "cmd" }, "$ " + s.text),
    s.output ? h("pre", {}, s.output) : "")),
    t.steps_total > t.steps.length ? h("p", { cls: "muted" }, `first ${t.steps.length} of ${t.steps_total} commands; the player has them all`) : "");
}

function terminalSection(t) {
  const box = h("div", { cls: "player" }, h("p", { cls: "muted" }, "loading the player…"));
  loadPlayer().then((AP) => {
    box.replaceChildren();
    // pauses longer than 2 s are shortened while playing (the text beside has the real times)
    AP.create(t.cast, box, { idleTimeLimit: 2, fit: "width", terminalFontSize: "12px", preload: true });
  }).catch((e) => box.replaceChildren(h("p", { cls: "error" }, e.message)));
  return section(`Terminal ${t.tty || ""}`,
    h("p", { cls: "muted" }, `recorded from ${short(t.start_ts)} UTC; `,
      t.cut_bytes ? h("span", { cls: "bad" }, `${t.cut_bytes} bytes not recorded (rate limit), marked in the player; `) : "",
      "input typed with echo off is not recorded and shows as ********; ", link(t.cast, "asciicast v2"), " (forensix replay --format asciicast)"),
    h("div", { cls: "terminal" }, box, transcriptView(t)));
}

// a part drawn when it arrives: url's JSON, its "terminal", into a section
function terminalPart(url) {
  const box = h("div", {}, h("p", { cls: "muted" }, "loading the terminal recording…"));
  getJSON(url).then((x) => box.replaceChildren(x.terminal ? terminalSection(x.terminal) : ""))
    .catch((e) => box.replaceChildren(h("p", { cls: "error" }, "terminal: " + e.message)));
  return box;
}

VIEWS.process = (d) => [h("h1", {}, "Process"),
  d.recording ? terminalPart(`/process/${d.entity_id}.json?part=terminal`) : "", processDetails(d)];

// first paint: the session, its tree and its commands; its files and connections follow
VIEWS.session = (d) => {
  const s = d.session, side = h("div", { cls: "side" }, h("p", { cls: "muted" }, "pick a process in the tree"));
  const rest = h("div", {}, h("p", { cls: "muted" }, "collecting files and connections…"));
  getJSON(partURL("rest")).then((x) => rest.replaceChildren(...sessionRest(x)))
    .catch((e) => rest.replaceChildren(h("p", { cls: "error" }, e.message)));
  const pick = async (eid) => {
    try { side.replaceChildren(processDetails(await getJSON(`/process/${eid}.json`), true)); } catch (e) { side.replaceChildren(h("p", { cls: "error" }, e.message)); }
  };
  return [
    h("h1", {}, `Session: ${s.description}`),
    h("p", {}, `${s.kind}, user ${s.user_name || ""}(${s.user_id})`, s.source_ip ? `, from ${s.source_ip}:${s.source_port}` : "",
      s.tty ? `, tty ${s.tty}` : "", s.audit_session_id ? `, audit session ${s.audit_session_id}` : "",
      `, ${short(s.start_ts)}`, (s.transitions || []).length ? `; su/sudo: ${s.transitions.join(", ")}` : ""),
    h("p", {}, link("/timeline?" + q({ session: s.leader_entity_id, quiet: 1 }), "session timeline"), " · ",
      link("/incident?" + q({ target: "session:" + s.leader_entity_id }), "incident graph")),
    s.recording ? terminalPart(partURL("terminal")) : "",
    h("div", { cls: "split" },
      h("div", {}, section("Process tree" + (d.tree_total > d.tree.length ? ` (first ${d.tree.length} of ${d.tree_total})` : ""), processTree(d.tree, pick))), side),
    section("Commands", table(d.commands, [["time", (r) => short(r.ts)], ["pid", (r) => procLink(r.process_entity_id, r.process_pid)],
      ["uid", (r) => r.user_effective_id], ["cwd", (r) => r.process_working_directory],
      ["command", (r) => h("code", {}, args(r.process_args) || r.process_executable)]], { cls: "commands" })),
    rest,
  ];
};

function sessionRest(d) {
  return [
    section("Files written", table(d.files_written, [["first", (r) => short(r.first_ts)], ["path", (r) => fileLink(r.file_path)],
      ["actions", (r) => (r.actions || []).join(" ")], ["bytes", (r) => r.bytes_written]], { empty: "none" })),
    section("Files deleted", table(d.files_deleted, [["time", (r) => short(r.first_ts)], ["path", (r) => fileLink(r.file_path)]], { empty: "none" })),
    section("Connections", table(d.connections, [["first", (r) => short(r.first_ts)], ["action", (r) => r.event_action],
      ["peer", (r) => `${r.peer_ip || ""}${r.peer_port ? ":" + r.peer_port : ""}`], ["count", (r) => r.connections]], { empty: "none" })),
  ];
}

VIEWS.tree = (d) => [
  h("h1", {}, "Process tree", d.at ? ` at ${short(d.at)}` : ""),
  form([field("at", "at", { size: 24, placeholder: "2026-11-26T05:00Z (empty: all)" }),
    h("label", {}, h("input", { type: "checkbox", name: "alive", value: "1", checked: PARAMS.get("alive") === "1" }), "alive then only"),
    field("root", "subtree of", { size: 18, placeholder: "entity id" }), field("session", "session", { size: 18 })]),
  h("p", { cls: "muted" }, "exited processes are included, with their end and exit code"),
  processTree(d.processes), pager(d, d.processes.length),
];

// first paint: the page of events; the histogram to brush on follows (a whole-record count)
VIEWS.timeline = (d) => {
  const next = () => { const p = new URLSearchParams(location.search); p.set("after", d.next); return "/timeline?" + p; };
  const chart = h("div", {});
  const brush = (a, b) => {
    const p = new URLSearchParams(location.search); p.delete("after"); p.set("from", a); p.set("to", b);
    location.href = "/timeline?" + p;
  };
  if (!PARAMS.get("after")) {
    getJSON(partURL("histogram")).then((x) => chart.replaceChildren(histogram(x.histogram, { onBrush: brush })))
      .catch((e) => chart.replaceChildren(h("p", { cls: "error" }, "chart: " + e.message)));
  }
  return [
    h("h1", {}, "Timeline"),
    form([field("from", "from", { size: 24 }), field("to", "to", { size: 24 }), h("label", {}, "category ", checks("category", d.categories)),
      field("action", "action", { size: 8 }), field("path", "path contains", { size: 16 }), field("ip", "ip", { size: 12 }),
      field("entity", "entity", { size: 16 }), field("session", "session", { size: 16 }),
      h("label", {}, h("input", { type: "checkbox", name: "quiet", value: "1", checked: PARAMS.get("quiet") === "1" }), "hide noise")]),
    chart,
    d.next !== undefined && !PARAMS.get("after") ? h("p", { cls: "muted" }, "drag across the chart to narrow the time window") : "",
    table(d.events, [["time", (r) => short(r.ts)], ["category", (r) => r.event_category], ["action", (r) => r.event_action],
      ["process", (r) => procLink(r.process_entity_id, `${r.process_name || "?"} [${r.process_pid}]`)],
      ["user", (r) => user(r.user_name, r.user_id, r.user_name_source)],
      ["what", (r) => r.message]], { empty: "no events match", cls: "events" }),
    d.next ? h("p", { cls: "pager" }, link(next(), "next page »")) : "",
  ];
};

VIEWS.file = (d) => [
  h("h1", {}, "File history"),
  form([field("path", "path", { size: 50, placeholder: "/etc/passwd" })]),
  d.path ? h("p", {}, link("/incident?" + q({ target: d.path }), "incident graph of this file")) : "",
  d.path ? table(d.history, [["time", (r) => short(r.ts)], ["what", (r) => r.action], ["path", (r) => r.file_path],
    ["to", (r) => r.file_target_path], ["process", (r) => procLink(r.process_entity_id, `${r.process_executable || r.process_name || "?"} [${r.process_pid}]`)],
    ["uid", (r) => r.user_id], ["bytes", (r) => r.flow_write_bytes || r.flow_read_bytes || ""]]) : "",
  d.path ? pager(d, d.history.length) : "",
];

// -- incident: the report and its graph ------------------------------------------------
// The server decides what the compact graph folds (analysis.graph_compact); the page draws
// what it is given, causes left, impact right, and asks for the full graph on request.
const KIND_STYLE = { process: "round-rectangle", file: "rectangle", connection: "diamond", unix: "hexagon", group: "round-tag" };
let cy = null;

function bytesText(n) {
  return n >= 1 << 20 ? (n / (1 << 20)).toFixed(1) + " MB" : n >= 1024 ? (n / 1024).toFixed(1) + " kB" : n + " B";
}

// a node's drawn label: a path's last two parts, a script's name beside its interpreter
// (the panel and the JSON keep them whole)
const INTERPRETER = /^((ba|da|z|k|c|tc)?sh|python[\d.]*|perl|ruby|node|php)$/;
function shortLabel(n) {
  if (n.kind === "file" && n.label.startsWith("/") && n.label.length > 28) {
    return "…/" + n.label.split("/").slice(-2).join("/");
  }
  if (n.kind === "process" && INTERPRETER.test(n.label.split(" [")[0]) && Array.isArray(n.args)) {
    const script = n.args.slice(1).find((a) => a && !a.startsWith("-"));
    if (script) return n.label.replace(" [", " " + script.split("/").pop().slice(0, 24) + " [");
  }
  if (n.kind === "group" && n.parts) return n.label + "\n" + Object.entries(n.parts).map(([k, v]) => `${v} ${k}`).join(", ");
  return n.label;
}

// a process node is labelled by its last image; an edge made while it ran another (a shell's
// write before it exec'd chmod) says which (src_image / dst_image, analysis.images)
// (as the DOT graph words it, render/graph.py _other_image: the acting end "by", the forked,
// killed or traced end "to")
function imageNote(e, byId) {
  const other = (id, image) => {
    const n = byId.get(id);
    return n && n.kind === "process" && image && image !== n.label.split(" [")[0] ? image : null;
  };
  const by = other(e.source, e.src_image);
  if (by) return " by " + by;
  const src = byId.get(e.source);
  const to = other(e.target, e.dst_image);
  if (!to) return "";
  return (src && (src.kind === "process" || src.kind === "group") ? " to " : " by ") + to;
}

function edgeLabel(e, byId) {
  const kinds = e.kinds && e.kinds.length ? e.kinds : [e.kind];
  return kinds[0] + (e.bytes ? " " + bytesText(e.bytes) : "") + (e.count > 1 && !e.bytes ? ` ×${e.count}` : "") +
    imageNote(e, byId || new Map());
}

function graphElements(g) {
  const byId = new Map(g.nodes.map((n) => [n.id, n]));
  return [
    ...g.nodes.map((n) => ({ group: "nodes", data: Object.assign({}, n, { id: n.id, shown: shortLabel(n) }) })),
    ...g.edges.filter((e) => e.source !== e.target).map((e) => ({ group: "edges", data: Object.assign({}, e, { label: edgeLabel(e, byId) }) })),
  ];
}

function memberLink(key, label) {
  if (key.startsWith("p:")) return link("/process/" + key.slice(2), label);
  if (label.startsWith("/")) return link("/file?" + q({ path: label }), label);
  return label;
}

function groupPanel(panel, d, showFull) {
  panel.replaceChildren(
    h("h3", {}, d.label),
    d.parts ? h("p", {}, Object.entries(d.parts).map(([k, v]) => `${v} ${k}`).join(", ")) : "",
    h("p", { cls: "muted" }, `folded in the compact graph (${d.group}); on the ${d.direction} side`),
    h("p", { cls: "actions" }, h("button", { onclick: showFull }, "show the full graph")),
    h("ul", { cls: "members" }, ...(d.members || []).slice(0, 300).map((k, i) => h("li", {}, memberLink(k, (d.member_labels || [])[i] || k)))));
}

function nodePanel(panel, n, showFull) {
  const d = n.data(), t = d.target;
  if (d.kind === "group") return groupPanel(panel, d, showFull);
  const events = d.kind === "process" ? "/timeline?" + q({ entity: d.entity_id })
    : d.kind === "file" && d.path ? "/timeline?" + q({ path: d.path })
    : d.kind === "connection" && t ? "/timeline?" + q({ ip: t.replace(/^\[/, "").replace(/\]?:\d+$/, "") }) : null;
  const expand = async (direction) => {
    try {
      const g = await getJSON("/graph.json?" + q({ target: t, direction, depth: 1, noise: PARAMS.get("noise"), graph: "compact" }));
      cy.add(graphElements(g).filter((el) => !cy.getElementById(el.data.id).length));
      layout();
    } catch (e) { panel.append(h("p", { cls: "error" }, e.message)); }
  };
  panel.replaceChildren(
    h("h3", {}, d.kind, ": ", d.label),
    d.executable ? h("p", {}, h("code", {}, args(d.args) || d.executable)) : "",
    d.time ? h("p", {}, "time: ", short(d.time)) : "",
    h("p", {}, `on the ${d.direction} side, ${d.depth} hops from the target`),
    h("p", { cls: "actions" },
      events ? link(events, "events") : "", " ",
      d.kind === "process" ? link("/process/" + d.entity_id, "details") : "", " ",
      d.kind === "file" && d.path ? link("/file?" + q({ path: d.path }), "history") : "", " ",
      t ? h("button", { onclick: () => expand("backward") }, "expand backward") : "",
      t ? h("button", { onclick: () => expand("forward") }, "expand forward") : "",
      h("button", { onclick: () => { n.remove(); panel.replaceChildren(); } }, "hide")));
}

// a node's column: the target at 0, its causes left (-hops), what it affected right (+hops)
function rankOf(n) {
  const d = n.data();
  return d.root ? 0 : d.direction === "forward" ? d.depth : -d.depth;
}

function layout() {
  // only the edges that go left to right place the nodes (a cycle, say an ancestor that
  // also received the data, would otherwise let dagre turn the drawing round); the others
  // are drawn all the same
  const ahead = cy.edges().filter((e) => rankOf(e.source()) < rankOf(e.target()));
  cy.nodes().union(ahead).layout({ name: "dagre", rankDir: "LR", nodeSep: 10, rankSep: 40, edgeSep: 6, animate: false, nodeDimensionsIncludeLabels: true,
    minLen: (e) => rankOf(e.target()) - rankOf(e.source()) }).run();
  // as tall as the drawing needs at its width (a wide chain leaves no empty band)
  const bb = cy.elements().boundingBox(), box = cy.container();
  box.style.height = Math.round(Math.max(320, Math.min(720, box.clientWidth * bb.h / Math.max(bb.w, 1) + 60))) + "px";
  cy.resize();
  cy.fit(undefined, 20);
  if (cy.zoom() > 1.4) { cy.zoom(1.4); cy.center(); }
}

function drawGraph(box, panel, g, showFull) {
  main.dataset.graphReceivedMs = Math.round(performance.now());
  if (cy) cy.destroy();
  cy = cytoscape({
    container: box, elements: graphElements(g), wheelSensitivity: 0.3,
    style: [
      { selector: "node", style: { label: "data(shown)", "font-size": 11, "text-wrap": "wrap", "text-max-width": 120,
        "text-valign": "bottom", "text-margin-y": 4, width: 26, height: 18, "background-color": "#789", shape: (n) => KIND_STYLE[n.data("kind")] || "ellipse",
        "text-background-color": "#fff", "text-background-opacity": 0.85, "text-background-padding": 1 } },
      { selector: "node[kind = 'process']", style: { "background-color": "#3a6ea5" } },
      { selector: "node[kind = 'file']", style: { "background-color": "#c58b2a" } },
      { selector: "node[kind = 'connection']", style: { "background-color": "#b23a3a" } },
      { selector: "node[kind = 'group']", style: { "background-color": "#bbb", "border-width": 1, "border-color": "#888", width: 34, height: 22, color: "#555", "font-style": "italic" } },
      { selector: "node[?root]", style: { "border-width": 3, "border-color": "#111", "font-weight": "bold" } },
      { selector: "node[direction = 'forward']", style: { "background-opacity": 0.6 } },
      { selector: "node:selected", style: { "border-width": 3, "border-color": "#e0a" } },
      { selector: "edge", style: { width: 1.3, "curve-style": "bezier", "target-arrow-shape": "triangle", "arrow-scale": 0.8,
        "line-color": "#999", "target-arrow-color": "#999", label: "data(label)", "font-size": 9, color: "#555",
        "text-background-color": "#fff", "text-background-opacity": 0.8, "text-rotation": "autorotate" } },
      { selector: "edge[kind = 'write'], edge[kind = 'read']", style: { width: 2, "line-color": "#c58b2a", "target-arrow-color": "#c58b2a" } },
      { selector: "edge[kind = 'fork'], edge[kind = 'exec']", style: { "line-color": "#3a6ea5", "target-arrow-color": "#3a6ea5" } },
      { selector: "edge[direction = 'forward']", style: { "line-style": "dashed" } },
    ],
  });
  layout();
  cy.on("tap", "node", (e) => nodePanel(panel, e.target, showFull));
  main.dataset.graphForm = g.compact ? "compact" : "full";
  main.dataset.graphMs = Math.round(performance.now());
}

function graphInfo(g) {
  const groups = g.nodes.filter((n) => n.kind === "group");
  const hidden = Object.values(g.hidden || {}).reduce((a, b) => a + b, 0);
  return (g.compact ? ` compact: ${g.nodes.length - groups.length} of ${g.full.nodes} objects drawn, ${groups.length} group${groups.length === 1 ? "" : "s"} counting the rest;`
    : ` full graph: ${g.nodes.length} objects, ${g.edges.length} edges;`) +
    (hidden ? ` the noise filters left out ${hidden} edges;` : "") +
    " causes left, impact right (dashed)" + (g.truncated ? " — TRUNCATED" : "");
}

// first paint: the summary (the alert, the acting process, its session); then the graph
// and the report's tables, asked for at once, drawn as each arrives
VIEWS.incident = (d) => {
  const box = h("div", { id: "graph", cls: "graph" }), panel = h("div", { cls: "side node-panel" }, h("p", { cls: "muted" }, "click a node"));
  const kinds = ["process", "file", "connection", "unix", "group"];
  const noise = PARAMS.get("noise") === "1";
  const toggleNoise = () => { const p = new URLSearchParams(location.search); if (noise) p.delete("noise"); else p.set("noise", "1"); return "/incident?" + p; };
  const who = h("div", {}, sessionLine(d)), info = h("span", { cls: "muted" }, " building the dependency graph…");
  const report = h("div", {}, h("p", { cls: "muted" }, "collecting the report…"));
  const part = (name) => getJSON(partURL(name));
  const formButton = h("button", { id: "graph-form", disabled: true }, "…");
  // the graph's form is in the address (graph=full), so a reload or the JSON link keeps it
  const showGraph = (form) => {
    const p = new URLSearchParams(location.search);
    if (form === "full") p.set("graph", "full"); else p.delete("graph");
    history.replaceState(null, "", "/incident?" + p);
    document.getElementById("json-link").href = "/incident.json?" + p;
    formButton.disabled = true;
    info.textContent = " building the dependency graph…";
    return getJSON("/incident.json?" + p + (p.toString() ? "&" : "") + "part=graph").then((g) => {
      info.textContent = graphInfo(g.graph);
      drawGraph(box, panel, g.graph, () => showGraph("full"));
      formButton.textContent = g.graph.compact ? "show the full graph" : "show the compact graph";
      formButton.onclick = () => showGraph(g.graph.compact ? "full" : "compact");
      formButton.disabled = false;
    }).catch((e) => { info.textContent = " graph: " + e.message; info.className = "bad"; });
  };
  showGraph(PARAMS.get("graph") === "full" ? "full" : "compact");
  part("report").then((r) => { who.replaceChildren(...sessionLine(r)); report.replaceChildren(...reportSections(r)); })
    .catch((e) => report.replaceChildren(h("p", { cls: "error" }, "report: " + e.message)));
  return [
    h("h1", {}, d.title),
    d.alert ? h("p", { cls: "alert-line" }, h("span", { cls: "lvl " + d.alert.rule_level }, d.alert.rule_level), " ", d.alert.rule_title || d.alert.rule_id,
      " — ", d.alert.summary, " ", short(d.alert.ts)) : "",
    who,
    h("div", { cls: "graph-controls" },
      formButton, " ",
      h("span", {}, "show: "), kinds.map((k) => h("label", {}, h("input", { type: "checkbox", checked: true, onchange: (e) => {
        if (cy) cy.nodes(`[kind = '${k}']`).style("display", e.target.checked ? "element" : "none");
      } }), k)),
      " ", link(toggleNoise(), noise ? "hide noise (filters on)" : "show noise (filters off)"),
      " ", h("button", { onclick: () => cy && layout() }, "re-layout"), info),
    h("div", { cls: "split" }, box, panel),
    report,
  ];
};

function sessionLine(d) {
  const s = d.session;
  return [
    s ? h("p", {}, "session: ", link("/session/" + s.leader_entity_id, s.description), `, ${s.kind}, user ${s.user_name || ""}(${s.user_id})`,
      s.source_ip ? `, from ${s.source_ip}:${s.source_port}` : "") : "",
    d.actor ? h("p", {}, "acting process: ", procLink(d.actor)) : "",
    (d.notes || []).length ? h("p", { cls: "bad" }, d.notes.join("; ")) : "",
  ].filter((x) => x !== "");
}

function reportSections(d) {
  return [
    section("Persistence touched", table(d.persistence, [["time", (r) => short(r.ts)], ["what", (r) => r.what], ["path", (r) => fileLink(r.file_path)],
      ["action", (r) => r.event_action], ["process", (r) => procLink(r.process_entity_id, r.process_pid)]], { empty: "none" })),
    section("Files written", table(d.files_written, [["first", (r) => short(r.first_ts)], ["path", (r) => fileLink(r.file_path)],
      ["actions", (r) => (r.actions || []).join(" ")], ["bytes", (r) => r.bytes_written]], { empty: "none" })),
    section("Files deleted", table(d.files_deleted, [["time", (r) => short(r.first_ts)], ["path", (r) => fileLink(r.file_path)]], { empty: "none" })),
    section("Network", table(d.network, [["first", (r) => short(r.first_ts)], ["action", (r) => r.event_action],
      ["peer", (r) => `${r.peer_ip || ""}${r.peer_port ? ":" + r.peer_port : ""}`], ["count", (r) => r.connections]], { empty: "none" })),
    section("Session process tree", processTree(d.tree)),
    section("Timeline", table(d.timeline, [["time", (r) => short(r.ts)], ["process", (r) => procLink(r.process_entity_id, `${r.process_name || "?"} [${r.process_pid}]`)],
      ["what", (r) => r.message]], { cls: "events" })),
  ];
}

// -- start -----------------------------------------------------------------------------
async function load() {
  try {
    // the incident paints its summary first and asks for the rest itself
    const first = { incident: "summary", timeline: "rows", session: "head" }[VIEW];
    const d = await getJSON(first ? partURL(first) : JSON_URL);
    const draw = VIEWS[VIEW];
    if (!draw) throw Object.assign(new Error("no such view"), { status: 404, hint: "start at /overview" });
    main.replaceChildren(...draw(d).filter((x) => x !== ""));
    document.title = `forensix: ${VIEW}`;
    // when the data was drawn, in ms since navigation began (bench/ui.py reads it)
    main.dataset.drawnMs = Math.round(performance.now());
    main.dataset.loaded = VIEW;
  } catch (e) { showError(e); main.dataset.loaded = "error"; }
}

document.getElementById("json-link").href = JSON_URL;
for (const a of document.querySelectorAll("nav a")) if (a.dataset.view === VIEW) a.classList.add("here");
if (PARAMS.get("q")) document.getElementById("q").value = PARAMS.get("q");
load();
startLive();
