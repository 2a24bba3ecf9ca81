// weft's page: renders the snapshots the server streams (`state` events on /api/events) and
// sends the buttons' actions (POST /api/action). Every API request carries the token as
// `Authorization: Bearer`: the script takes it from the address weft printed (`#token=…`, a
// fragment no server ever receives), keeps it in this tab's sessionStorage (this origin's
// alone, port included) and takes it out of the address bar. No cookie: cookies do not tell
// ports apart, so every other server on this host would be sent one. No library, no inline
// script or style (the server's Content-Security-Policy allows neither).
"use strict";

const TOKEN_KEY = "weft-token";
// How long the page waits before opening the event stream again after it ended.
const RECONNECT_MS = 1000;

// The token: from the address's fragment (then stored and taken out of the address bar and
// the history), else the one this tab stored before.
function takeToken() {
  const m = /^#token=([0-9a-fA-F]{64})$/.exec(location.hash);
  if (m) {
    sessionStorage.setItem(TOKEN_KEY, m[1]);
    history.replaceState(null, "", location.pathname);
  }
  return sessionStorage.getItem(TOKEN_KEY);
}

const TOKEN = takeToken();
// The address with the token pasted into a page already open changes only its fragment (no
// new load): take the token and load the page again with it.
window.addEventListener("hashchange", () => {
  if (takeToken() !== TOKEN) location.reload();
});
const authorized = (headers) => Object.assign({ authorization: "Bearer " + TOKEN }, headers || {});
const $ = (id) => document.getElementById(id);
// What each panel last rendered, so a panel whose data did not change keeps its DOM (and
// the button under the user's pointer).
const rendered = {};

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let v = Number(n) || 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return (i === 0 ? v.toFixed(0) : v.toFixed(1)) + " " + units[i];
}

function duration(ms) {
  let s = Math.floor((Number(ms) || 0) / 1000);
  const d = Math.floor(s / 86400); s -= d * 86400;
  const hr = Math.floor(s / 3600); s -= hr * 3600;
  const m = Math.floor(s / 60); s -= m * 60;
  if (d) return `${d}d ${hr}h`;
  if (hr) return `${hr}h ${m}m`;
  if (m) return `${m}m ${s}s`;
  return `${s}s`;
}

const short = (id) => (id || "").slice(0, 16);

// Renders `build()` into `el` when `data` differs from what it last rendered there.
function panel(key, el, data, build) {
  const json = JSON.stringify(data);
  if (rendered[key] === json) return;
  rendered[key] = json;
  el.replaceChildren(...[].concat(build()));
}

function say(text, ok) {
  const m = $("message");
  m.textContent = text;
  m.className = ok ? "ok" : "";
}

async function act(action) {
  say("…", true);
  try {
    const r = await fetch("/api/action", {
      method: "POST",
      headers: authorized({ "content-type": "application/json" }),
      body: JSON.stringify(action),
    });
    if (r.status === 403) { refused(); return false; }
    const text = await r.text();
    let outcome;
    try { outcome = JSON.parse(text); } catch (_) { outcome = { ok: false, message: text.trim() }; }
    say(outcome.message, r.ok && outcome.ok);
    return r.ok && outcome.ok;
  } catch (e) {
    say("the page server does not answer: " + e, false);
    return false;
  }
}

function renderNode(node) {
  $("title-network").textContent = node ? node.network : "";
  const f = {
    id: node && node.id,
    network: node && node.network,
    uptime: node && duration(node.uptime_ms),
    listen_addr: node && (node.listen_addr || "—"),
    announce_addr: node && (node.announce_addr || "—"),
    driver: node && node.driver,
    links: node && `${node.links}${node.network_secret ? ", network secret" : ""}`,
    incarnation: node && node.incarnation,
    pid: node && node.pid,
    traffic: node && `${bytes(node.bytes_in)} in, ${bytes(node.bytes_out)} out`,
  };
  for (const dd of document.querySelectorAll("#node dd[data-field]")) {
    dd.textContent = f[dd.dataset.field] ?? "";
  }
}

function renderHosts(s) {
  $("hosts-count").textContent = `${s.hosts.filter((x) => x.direct).length} linked, ${s.hosts_total} known`;
  panel("hosts", $("hosts-rows"), s.hosts, () => {
    if (!s.hosts.length) return h("tr", {}, h("td", { colspan: 6, class: "empty", text: "no hosts yet" }));
    return s.hosts.map((x) => h("tr", { "data-node": x.node, "data-link": x.direct ? "direct" : "heard" },
      h("td", { class: "mono", title: x.node, text: short(x.node) }),
      h("td", { class: "mono", text: x.addr || "—" }),
      h("td", { class: x.direct ? "direct" : "heard", text: x.direct ? "direct" : "heard of" }),
      h("td", { text: duration(x.last_seen_ms_ago) + " ago" }),
      h("td", { class: "num bytes-in", text: x.direct ? bytes(x.bytes_in) : "—" }),
      h("td", { class: "num bytes-out", text: x.direct ? bytes(x.bytes_out) : "—" })));
  });
}

function renderFolder(f) {
  const transfers = h("table", { class: "transfers" },
    h("thead", {}, h("tr", {}, ["path", "progress", "done", "rate", "time left"].map((t, i) => h("th", { class: i > 1 ? "num" : null, text: t })))),
    h("tbody", {}, f.transfers.length ? f.transfers.map((t) => h("tr", { "data-path": t.path },
      h("td", { class: "mono", text: t.path }),
      h("td", {}, h("progress", { max: Math.max(t.size, 1), value: t.bytes_done })),
      h("td", { class: "num", text: `${bytes(t.bytes_done)} / ${bytes(t.size)}` }),
      h("td", { class: "num rate", text: t.rate === null ? "…" : t.rate === 0 ? "stalled" : bytes(t.rate) + "/s" }),
      h("td", { class: "num eta", text: t.eta_s === null ? "—" : duration(t.eta_s * 1000) }))) :
      h("tr", {}, h("td", { colspan: 5, class: "empty", text: "no transfer in progress" }))));
  const errors = h("table", { class: "errors" },
    h("tbody", {}, f.errors.length ? f.errors.map((e) => h("tr", { "data-path": e.path },
      h("td", { class: "mono", text: e.path }),
      h("td", { class: "why", text: e.error || "failed" }))) :
      h("tr", {}, h("td", { class: "empty", text: "no errors" }))));
  const conflicts = f.conflicts.length ? f.conflicts.map((c) => h("div", { class: "conflict", "data-path": c.path },
    h("b", { class: "mono", text: c.path }), " has versions:",
    h("ul", {}, c.versions.map((v) => h("li", {},
      h("span", { class: "mono", text: v }), " ",
      h("button", {
        class: "resolve", type: "button", "data-path": c.path, "data-keep": v,
        onclick: () => act({ action: "resolve", path: c.path, keep: v }),
      }, v === c.path ? "keep this one" : "keep this copy")))))) :
    [h("p", { class: "empty", text: "no conflicts" })];
  const more = f.files_total > f.files.length ? ` (first ${f.files.length} of ${f.files_total})` : "";
  const files = h("table", { class: "files" },
    h("thead", {}, h("tr", {}, ["path", "kind", "size", "state"].map((t, i) => h("th", { class: i === 2 ? "num" : null, text: t })))),
    h("tbody", {}, f.files.length ? f.files.map((x) => h("tr", { "data-path": x.path, "data-state": x.state },
      h("td", { class: "mono", text: x.path }),
      h("td", { text: x.kind }),
      h("td", { class: "num", text: bytes(x.size) }),
      h("td", { class: "state-" + x.state, text: x.state }))) :
      h("tr", {}, h("td", { colspan: 4, class: "empty", text: "empty" }))));
  return h("div", { class: "shared", "data-folder": f.folder },
    h("div", { class: "folder-head" }, h("b", { class: "mono", text: f.root }),
      h("small", { class: "mono", text: "folder " + short(f.folder) }), h("span", { class: "folder-state", text: f.state })),
    h("h3", {}, "Transfers in progress"), transfers,
    h("h3", {}, "Errors"), errors,
    h("h3", {}, "Conflicts"), h("div", { class: "conflicts" }, conflicts),
    h("h3", {}, `Files${more}`), files);
}

function renderFolders(s) {
  panel("folders", $("folders"), s.folders, () =>
    s.folders.length ? s.folders.map(renderFolder) : h("p", { class: "empty", text: "no shared folder on this node" }));
}

function renderDrops(s) {
  panel("drops", $("drops-rows"), s.drops, () => {
    if (!s.drops.length) return h("tr", {}, h("td", { colspan: 9, class: "empty", text: "no drops" }));
    return s.drops.map((d) => h("tr", { "data-drop": d.drop, "data-role": d.role },
      h("td", { class: "mono", title: d.drop, text: short(d.drop) }),
      h("td", { text: d.role }),
      h("td", { class: "num version", title: d.version || "", text: d.counter === null ? "—" : d.counter }),
      h("td", { class: "mono", text: d.shown ? short(d.shown) : "—" }),
      h("td", { class: "num branches" + (d.heads > 1 ? " state-conflict" : ""), text: d.heads }),
      h("td", { class: "mono owners" }, d.owners.map((o, i) => h("div", { title: o, text: (i ? "" : "★ ") + short(o) }))),
      h("td", { class: "mono", text: d.dir || "—" }),
      h("td", { class: "num", text: d.transfers.length ? d.transfers.map((t) => `${t.path} ${bytes(t.bytes_done)}/${bytes(t.size)}`).join(", ") : "—" }),
      h("td", {}, d.role === "owner" && d.dir ? h("button", {
        class: "publish", type: "button", "data-dir": d.dir,
        onclick: () => act({ action: "drop_publish", dir: d.dir }),
      }, "publish") : null)));
  });
}

function renderTable(s) {
  $("table-count").textContent = s.table_total > s.table.length ? `(first ${s.table.length} of ${s.table_total})` : "";
  panel("table", $("table-rows"), s.table, () => {
    if (!s.table.length) return h("tr", {}, h("td", { colspan: 5, class: "empty", text: "no keys" }));
    return s.table.map((e) => h("tr", { "data-key": e.key },
      h("td", { class: "mono key", text: e.key }),
      h("td", { class: "mono value", text: (e.value ?? ("hex " + e.value_hex)) + (e.value_bytes == null ? "" : ` … (${e.value_bytes} bytes)`) }),
      h("td", { class: "mono", title: e.by, text: short(e.by) }),
      h("td", { text: e.lease_owner ? `${short(e.lease_owner)} until ${new Date(e.lease_until_unix_ms).toLocaleTimeString()}` : "—" }),
      h("td", {}, h("button", { class: "delete", type: "button", onclick: () => act({ action: "table_delete", key: e.key }) }, "delete"))));
  });
}

// The chart: the last 600 points, bytes a second, both lines on one scale.
function renderChart(points) {
  const W = 600, H = 160, N = 600;
  const pts = points.slice(-N);
  const peak = Math.max(1, ...pts.map((p) => Math.max(p.in_bps, p.out_bps)));
  const line = (key) => pts.map((p, i) => {
    const x = W - (pts.length - 1 - i) * (W / (N - 1));
    const y = H - 1 - (p[key] / peak) * (H - 8);
    return `${x.toFixed(1)},${y.toFixed(1)}`;
  }).join(" ");
  $("chart-in").setAttribute("points", line("in_bps"));
  $("chart-out").setAttribute("points", line("out_bps"));
  const last = pts[pts.length - 1] || { in_bps: 0, out_bps: 0 };
  $("rate-in").textContent = bytes(last.in_bps) + "/s";
  $("rate-out").textContent = bytes(last.out_bps) + "/s";
  $("rate-peak").textContent = bytes(peak === 1 ? 0 : peak) + "/s";
  $("chart").dataset.points = String(pts.length);
}

function render(s) {
  const live = $("live");
  if (s.error) {
    live.textContent = "node not answering: " + s.error;
    live.className = "live off";
  } else {
    live.textContent = "live";
    live.className = "live";
  }
  renderNode(s.node);
  renderHosts(s);
  renderFolders(s);
  renderDrops(s);
  renderTable(s);
  renderChart(s.throughput || []);
  document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
}

function offline(text) {
  const live = $("live");
  live.textContent = text;
  live.className = "live off";
}

// The page cannot work: no token, or the server refuses it (a new token, another node).
function refused() {
  sessionStorage.removeItem(TOKEN_KEY);
  offline("no valid token: open the address weft printed (it ends in #token=…); the token is in the node's state folder, file ui-token");
}

// One server-sent event (the lines of one block): a `state` snapshot is rendered.
function dispatch(block) {
  let event = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line === "" || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") event = value;
    else if (field === "data") data.push(value);
  }
  if (event !== "state" || !data.length) return;
  try { render(JSON.parse(data.join("\n"))); } catch (err) { say("bad snapshot: " + err, false); }
}

// The live feed: /api/events read as a stream (EventSource cannot send the token's header),
// opened again whenever it ends.
async function connect() {
  if (!TOKEN) { refused(); return; }
  for (;;) {
    try {
      const r = await fetch("/api/events", { headers: authorized(), cache: "no-store" });
      if (r.status === 403) { refused(); return; }
      if (!r.ok || !r.body) throw new Error("HTTP " + r.status);
      const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffered = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffered += value; // the server ends lines with "\n" alone
        let end;
        while ((end = buffered.indexOf("\n\n")) >= 0) {
          dispatch(buffered.slice(0, end));
          buffered = buffered.slice(end + 2);
        }
      }
    } catch (_) {
      // The server is gone or the stream broke: shown below, tried again.
    }
    offline("reconnecting…");
    await new Promise((done) => setTimeout(done, RECONNECT_MS));
  }
}

function onSubmit(id, build) {
  $(id).addEventListener("submit", async (e) => {
    e.preventDefault();
    if (await act(build())) e.target.reset();
  });
}

onSubmit("drop-subscribe", () => ({ action: "drop_subscribe", drop: $("sub-drop").value.trim(), dir: $("sub-dir").value.trim() }));
onSubmit("drop-create", () => ({ action: "drop_create", dir: $("create-dir").value.trim() }));
onSubmit("table-form", () => ({ action: "table_set", key: $("table-key").value, value: $("table-value").value }));
connect();
