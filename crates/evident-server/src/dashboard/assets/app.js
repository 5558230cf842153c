// Evident dashboard: a small hand-written app over the node's own /api/v1 routes, signed in
// by a server-side session cookie (sent automatically, HttpOnly) and a CSRF token (sent on
// every POST). Filtering, counting and paging happen on the server; the URL holds the view.
"use strict";

const $ = (id) => document.getElementById(id);
const FILTERS = ["actor", "action", "target", "ip", "tenant", "node", "severity", "outcome"];
const SEVERITIES = ["debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"];
const COLOURS = { debug: "#9aa5b1", info: "#3b82f6", notice: "#14b8a6", warning: "#f59e0b", error: "#ef4444", critical: "#b91c1c", alert: "#7e22ce", emergency: "#000000" };
let session = null;
let cursors = [null];
let current = { events: [], next: null };
let opener = null; // the row button that opened the detail: focus returns to it on close

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "text") node.textContent = v; else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (options.method && options.method !== "GET" && session) headers["X-CSRF-Token"] = session.csrf_token;
  const r = await fetch(path, Object.assign({}, options, { headers, credentials: "same-origin" }));
  if (r.status === 401) { signedOut("Your session ended: sign in again."); throw new Error("signed out"); }
  if (!r.ok) {
    let message = r.status + " " + r.statusText;
    try { const body = await r.json(); message = body.error.message; } catch (_) { /* not JSON */ }
    throw new Error(message);
  }
  return r;
}

// ---- the URL holds the query ----
function state() { return new URLSearchParams(location.search); }
function setState(params, replace) {
  const url = "/" + (params.toString() ? "?" + params.toString() : "");
  if (replace) history.replaceState(null, "", url); else history.pushState(null, "", url);
}
function localInput(ms) {
  const d = new Date(ms - new Date(ms).getTimezoneOffset() * 60000);
  return d.toISOString().slice(0, 19);
}
/// The API query of the URL's filter (time presets become from/to).
function apiFilter(params) {
  const q = new URLSearchParams();
  const range = params.get("range") || "";
  const spans = { "24h": 86400000, "7d": 7 * 86400000, "30d": 30 * 86400000 };
  if (spans[range]) {
    q.set("from", new Date(Date.now() - spans[range]).toISOString());
  } else if (range === "custom") {
    if (params.get("from")) q.set("from", new Date(params.get("from")).toISOString());
    if (params.get("to")) q.set("to", new Date(params.get("to")).toISOString());
  }
  for (const f of FILTERS) if (params.get(f)) q.set(f, params.get(f));
  return q;
}
function formToParams() {
  const p = new URLSearchParams();
  const range = $("f-range").value;
  if (range) p.set("range", range);
  if (range === "custom") {
    if ($("f-from").value) p.set("from", $("f-from").value);
    if ($("f-to").value) p.set("to", $("f-to").value);
  }
  for (const f of FILTERS) { const v = $("f-" + f).value.trim(); if (v) p.set(f, v); }
  if ($("f-limit").value !== "50") p.set("limit", $("f-limit").value);
  return p;
}
function paramsToForm(p) {
  $("f-range").value = p.get("range") || "";
  $("f-from").value = p.get("from") || "";
  $("f-to").value = p.get("to") || "";
  for (const f of FILTERS) $("f-" + f).value = p.get(f) || "";
  $("f-limit").value = p.get("limit") || "50";
  const custom = $("f-range").value === "custom";
  $("f-from").disabled = !custom; $("f-to").disabled = !custom;
}

// ---- sign-in ----
function signedIn(s) {
  session = s;
  $("login").hidden = true;
  $("nav").hidden = false;
  $("logout").hidden = false;
  $("who").textContent = "Signed in as " + s.key_id + " (" + s.role + (s.tenant ? ", tenant " + s.tenant : "") + ") on " + s.node_id;
  if (s.tenant) { $("f-tenant").value = s.tenant; $("f-tenant").readOnly = true; }
  route();
}
function signedOut(message) {
  session = null;
  for (const id of ["explorer", "integrity", "reviews", "nav", "logout"]) $(id).hidden = true;
  $("login").hidden = false;
  $("who").textContent = "";
  $("login-error").textContent = message || "";
  $("key").focus();
}

// ---- views ----
function route() {
  const p = state();
  const view = p.get("view") || "explorer";
  for (const v of ["explorer", "integrity", "reviews"]) {
    $(v).hidden = v !== view;
    $("nav-" + v).setAttribute("aria-current", v === view ? "page" : "false");
  }
  if (view === "explorer") { paramsToForm(p); cursors = [null]; loadExplorer(); if (p.get("seq")) openDetail(Number(p.get("seq"))); else $("detail").hidden = true; }
  if (view === "integrity") loadIntegrity();
  if (view === "reviews") loadReviews();
  refreshReadOnly();
}

async function refreshReadOnly() {
  try {
    const s = await (await api("/api/v1/verify/status")).json();
    const banner = $("readonly-banner");
    banner.hidden = !s.read_only;
    banner.textContent = s.read_only ? "READ-ONLY: this node refuses writes" + (s.damage ? ": " + s.damage.message : " (integrity damage found)") : "";
  } catch (_) { /* shown elsewhere */ }
}

async function loadExplorer() {
  const p = state();
  const q = apiFilter(p);
  $("filter-error").textContent = "";
  for (const [id, format] of [["export-csv", "csv"], ["export-json", "json"], ["export-bundle", "ndjson"]]) {
    const e = new URLSearchParams(q);
    if (format === "json") { $(id).href = "/dashboard/export.json?" + e.toString(); continue; }
    e.set("format", format);
    $(id).href = "/api/v1/audit-log?" + e.toString();
  }
  loadPage();
  try {
    const h = new URLSearchParams(q); h.set("buckets", "40");
    const hist = await (await api("/api/v1/audit-log/histogram?" + h.toString())).json();
    $("coverage").textContent = hist.total === 1 ? "1 event matched in this range" : hist.total + " events matched in this range";
    $("coverage").dataset.total = hist.total;
    drawChart(hist);
  } catch (err) {
    $("coverage").textContent = "";
    $("filter-error").textContent = err.message;
  }
}

async function loadPage() {
  const p = state();
  const q = apiFilter(p);
  q.set("limit", p.get("limit") || "50");
  const cursor = cursors[cursors.length - 1];
  if (cursor) q.set("cursor", cursor);
  const body = $("events").tBodies[0];
  try {
    const page = await (await api("/api/v1/audit-log?" + q.toString())).json();
    current = { events: page.events, next: page.next_cursor };
    body.replaceChildren(...page.events.map(row));
    const first = (cursors.length - 1) * Number(q.get("limit")) + 1;
    $("page-info").textContent = page.events.length
      ? `Page ${cursors.length}: events ${first} to ${first + page.events.length - 1}` + (page.next_cursor ? ", more follow" : ", the last page")
      : "No events on this page";
    $("next-page").disabled = !page.next_cursor;
    $("first-page").disabled = cursors.length === 1;
    if (!$("coverage").dataset.total && page.next_cursor) $("coverage").textContent = "more than " + page.events.length + " events matched";
  } catch (err) {
    body.replaceChildren();
    $("filter-error").textContent = err.message;
  }
}

function row(e) {
  const open = el("button", { type: "button", class: "seq", "aria-label": "Open event " + e.seq, "data-seq": e.seq, text: String(e.seq) });
  open.addEventListener("click", () => { opener = open; const p = state(); p.set("seq", e.seq); setState(p); openDetail(e.seq); });
  return el("tr", { class: "sev-" + e.severity },
    el("td", {}, open), el("td", { text: e.recorded_at }), el("td", { text: e.actor.id }), el("td", { text: e.action }),
    el("td", { text: e.target.kind + ":" + e.target.id }), el("td", { text: e.outcome }), el("td", { text: e.severity }), el("td", { text: e.tenant }));
}

function drawChart(hist) {
  const ns = "http://www.w3.org/2000/svg";
  const width = 800, height = 160;
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height + 20}`);
  svg.setAttribute("width", "100%");
  svg.setAttribute("aria-hidden", "true");
  const max = Math.max(1, ...hist.buckets.map((b) => b.total));
  const w = hist.buckets.length ? width / hist.buckets.length : width;
  hist.buckets.forEach((b, i) => {
    let y = height;
    for (const s of SEVERITIES) {
      const n = b.by_severity[s] || 0;
      if (!n) continue;
      const h = (n / max) * height;
      y -= h;
      const r = document.createElementNS(ns, "rect");
      r.setAttribute("x", i * w + 1); r.setAttribute("y", y); r.setAttribute("width", Math.max(1, w - 2)); r.setAttribute("height", h);
      r.setAttribute("fill", COLOURS[s]);
      const t = document.createElementNS(ns, "title");
      t.textContent = `${new Date(b.start).toISOString()}: ${n} ${s}`;
      r.append(t);
      svg.append(r);
    }
  });
  const axis = document.createElementNS(ns, "text");
  axis.setAttribute("x", 0); axis.setAttribute("y", height + 15); axis.setAttribute("font-size", "11");
  axis.textContent = hist.from ? `${new Date(hist.from).toISOString()} to ${new Date(hist.to).toISOString()}, peak ${max} per bucket` : "no events";
  svg.append(axis);
  $("chart").replaceChildren(svg);
  $("chart").setAttribute("aria-label", `Histogram: ${hist.total} events in ${hist.buckets.length} buckets`);
  const totals = {};
  for (const b of hist.buckets) for (const [s, n] of Object.entries(b.by_severity)) totals[s] = (totals[s] || 0) + n;
  $("chart-legend").replaceChildren(...SEVERITIES.filter((s) => totals[s]).map((s) => {
    const swatch = el("span", { class: "swatch sw-" + s, "aria-hidden": "true" });
    return el("li", {}, swatch, `${s}: ${totals[s]}`);
  }));
}

// ---- event detail and its proof ----
async function fetchEvent(seq) {
  const known = current.events.find((e) => e.seq === seq);
  if (known) return known;
  // Not on this page (a shared link): the one event by its sequence number.
  return (await api("/dashboard/entry/" + seq)).json();
}

async function openDetail(seq) {
  const panel = $("detail");
  panel.hidden = false;
  $("detail-title").textContent = "Event " + seq;
  $("detail-fields").replaceChildren();
  $("proof-steps").replaceChildren();
  $("proof-cosignatures").replaceChildren();
  $("proof-status").textContent = "Verifying in this browser…";
  $("proof-status").className = "";
  panel.focus();
  let e;
  try { e = await fetchEvent(seq); } catch (err) { $("proof-status").textContent = "Cannot load the event: " + err.message; return; }
  const fields = [
    ["Sequence", e.seq], ["Id", e.id], ["Recorded at (by the node)", e.recorded_at],
    ["Occurred at (claimed by the sender)", e.occurred_at || "not given"],
    ["Node", e.node_id], ["Tenant", e.tenant], ["Actor", e.actor.id + " (" + e.actor.kind + ")"],
    ["Actor IP", e.actor.ip || "none"], ["User agent", e.actor.user_agent || "none"], ["Action", e.action],
    ["Target", e.target.kind + ":" + e.target.id], ["Outcome", e.outcome], ["Severity", e.severity],
    ["Appended by key", e.appended_by || "not recorded (entry format v1)"], ["Entry hash", e.hash], ["Seal", e.seal],
  ];
  $("detail-fields").replaceChildren(...fields.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: String(v) })]));
  $("detail-json").textContent = JSON.stringify(e, null, 2);
  verifyDetail(e);
}

async function verifyDetail(e) {
  const status = $("proof-status");
  try {
    let note = null, proof = null;
    for (let attempt = 0; attempt < 20; attempt++) {
      note = await (await api("/api/v1/checkpoint")).text();
      const size = Number(note.split("\n")[1]);
      if (size > e.seq) { proof = await (await api(`/api/v1/proof/inclusion?seq=${e.seq}&size=${size}`)).json(); break; }
      status.textContent = "Waiting for a checkpoint that covers entry " + e.seq + "…";
      await new Promise((r) => setTimeout(r, 500));
    }
    if (!proof) throw new Error("no signed checkpoint covers entry " + e.seq + " yet");
    // The checkpoint route's note carries the cosignatures collected for it (the proof's
    // copy is the node's signed note alone); both are the checkpoint of the proof's size.
    const checkpoint = Number(note.split("\n")[1]) === proof.size ? note : proof.checkpoint || note;
    const result = await EvidentVerify.verifyEvent(e, proof, checkpoint, session.public_key, pinnedWitness());
    $("proof-steps").replaceChildren(...result.steps.map((s) =>
      el("li", { class: s.ok === true ? "ok" : s.ok === false ? "bad" : "skip" }, (s.ok === true ? "✓ " : s.ok === false ? "✗ " : "– ") + s.what + ": " + s.detail)));
    $("proof-cosignatures").replaceChildren(...(result.cosignatures.length
      ? result.cosignatures.map(cosignatureItem)
      : [el("li", { text: result.witness ? "No witness cosignatures on this checkpoint" : "Witness cosignatures not checked: the proof failed before them" })]));
    status.className = result.ok ? "verified" : "failed";
    status.textContent = result.ok
      ? `Verified in this browser: entry ${e.seq} is in the log of ${proof.size} entries signed by ${session.public_key.split("+")[0]}`
      : "FAILED: " + result.reason;
  } catch (err) {
    status.className = "failed";
    status.textContent = "FAILED: " + err.message;
  }
}

/// The witness keys and policy pinned at sign-in (the node's [witness] table, never what a
/// checkpoint claims).
function pinnedWitness() {
  return { keys: session.witness_keys || [], k: session.witness_policy_k || 0 };
}
function cosignatureItem(c) {
  const mark = { verified: "✓ ", bad: "✗ ", unlisted: "– ", other: "– " }[c.status];
  const what = { verified: "Cosigned by witness ", bad: "Cosignature by listed witness ", unlisted: "Cosignature by unlisted witness ", other: "Signature line by " }[c.status];
  const time = c.time ? (c.status === "verified" ? " at " + c.time : " (claims " + c.time + ")") : "";
  return el("li", { class: c.status === "verified" ? "ok" : c.status === "bad" ? "bad" : "skip", text: mark + what + c.name + time + ": " + c.detail });
}
function policyText(w) {
  if (!w.required) return "none ([witness] policy_k = 0): no cosignature required";
  return `${w.required} valid cosignature${w.required === 1 ? "" : "s"} by distinct witnesses of the ${w.listed.length} listed (${w.listed.join(", ")})`;
}

// ---- integrity ----
function fill(dl, pairs) {
  $(dl).replaceChildren(...pairs.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: String(v) })]));
}
async function loadIntegrity() {
  try {
    const note = await (await api("/api/v1/checkpoint")).text();
    const n = EvidentVerify.parseNote(note);
    const own = n.sigs.filter((s) => s.raw.length === 68).length;
    const pinned = pinnedWitness();
    const w = await EvidentVerify.checkWitnesses(n, pinned.keys, pinned.k);
    const cosigs = w.lines.map((c) => c.name + ": " + (c.status === "verified" ? "verified" + (c.time ? " at " + c.time : "") : c.detail));
    fill("checkpoint-fields", [["Origin", n.origin], ["Size", n.size], ["Root", EvidentVerify.hex(n.root)],
      ["Node signatures", own], ["Witness cosignatures (checked in this browser)", cosigs.length ? cosigs.join("; ") : "none"],
      ["Witness policy", policyText(w)],
      ["This checkpoint meets the policy", w.required ? (w.ok ? `yes: ${w.counted.length} of ${w.required} (${w.counted.join(", ")})` : "NO: " + w.reason)
        : w.bad ? "NO: " + w.bad : "no policy to meet"]]);
    $("checkpoint-fields").classList.toggle("failed", !w.ok);
    $("checkpoint-status").textContent = "";
  } catch (err) { $("checkpoint-status").textContent = err.message; }
  try {
    const s = await (await api("/api/v1/verify/status")).json();
    const t = (ms) => (ms ? new Date(ms).toISOString() : "never");
    const pass = s.last_pass;
    fill("selfcheck-fields", [
      ["Node state", s.read_only ? "READ-ONLY (refuses writes)" : "accepting writes"],
      ["Damage found", s.damage ? `entry ${s.damage.seq ?? "?"}: ${s.damage.message} (${s.damage.detected_by}, ${t(s.damage.detected_at)})` : "none"],
      ["Last background pass", pass ? `${pass.kind} pass of entries ${pass.from_seq} to ${pass.to_seq}, finished ${t(pass.finished_at)}: ${pass.outcome}${pass.problem ? " (" + pass.problem.message + ")" : ""}${pass.error ? " (" + pass.error + ")" : ""}` : "none yet"],
      ["Last clean pass", t(s.last_success_at)], ["Last clean full pass", t(s.last_full_pass_at)],
      ["Passes / failures since start", `${s.passes} / ${s.failures}`],
      ["Schedule", `incremental every ${s.every_ms / 1000} s, full every ${s.full_every_ms / 3600000} h`],
    ]);
    $("selfcheck-fields").classList.toggle("failed", !!s.read_only);
  } catch (err) { fill("selfcheck-fields", [["error", err.message]]); }
  try {
    const list = await (await api("/api/v1/consumers")).json();
    $("consumers").tBodies[0].replaceChildren(...list.map((c) => el("tr", {},
      el("td", { text: c.kind }), el("td", { text: c.name }), el("td", { text: String(c.next_seq) }),
      el("td", { text: `${c.lag_events} events, ${c.lag_seconds.toFixed(1)} s` + (c.retrying ? " (retrying)" : "") }), el("td", { text: c.last_error || "none" }))));
    if (!list.length) $("consumers").tBodies[0].replaceChildren(el("tr", {}, el("td", { colspan: "5", text: "No forwarders, publisher or webhooks configured" })));
  } catch (err) { $("consumers").tBodies[0].replaceChildren(el("tr", {}, el("td", { colspan: "5", text: err.message }))); }
  try { $("publisher").textContent = JSON.stringify(await (await api("/api/v1/publisher")).json(), null, 2); }
  catch (err) { $("publisher").textContent = "Publisher: " + err.message; }
}
async function verifyNow() {
  const button = $("verify-now");
  button.disabled = true;
  $("verify-progress").hidden = false;
  const started = Date.now();
  const tick = setInterval(() => { $("verify-result").textContent = `Verifying the whole log… ${Math.round((Date.now() - started) / 1000)} s`; }, 250);
  try {
    const r = await (await api("/api/v1/verify")).json();
    $("verify-result").className = r.ok ? "verified" : "failed";
    $("verify-result").textContent = r.ok
      ? `Verified: ${r.entries} entries, root ${r.root || "(empty)"} at size ${r.size}`
      : "FAILED: " + (r.violation && r.violation.message ? r.violation.message : JSON.stringify(r.violation));
  } catch (err) {
    $("verify-result").className = "failed";
    $("verify-result").textContent = "FAILED: " + err.message;
  } finally {
    clearInterval(tick);
    $("verify-progress").hidden = true;
    button.disabled = false;
    loadIntegrity();
    refreshReadOnly();
  }
}

// ---- reviews ----
async function show(id, path, describe) {
  try { $(id).textContent = JSON.stringify(await (await api(path)).json(), null, 2); }
  catch (err) { $(id).textContent = describe + ": " + err.message; }
}
function loadReviews() {
  const rules = session.four_eyes_rules || [];
  const select = $("four-eyes-rule");
  if (select.options.length !== rules.length) select.replaceChildren(...rules.map((r) => el("option", { value: r, text: r })));
  select.disabled = !rules.length;
  if (rules.length) show("four-eyes", "/api/v1/reviews/four-eyes?rule=" + encodeURIComponent(select.value), "Four-eyes report unavailable");
  else $("four-eyes").textContent = "No four-eyes rules are configured on this node ([[four_eyes]] in its configuration).";
  show("webhooks", "/api/v1/webhooks", "Alert deliveries unavailable");
  if (!session.cluster) { $("cluster").textContent = "Not a cluster node ([cluster] is not configured)."; return; }
  (async () => {
    try {
      const page = await (await api("/api/v1/audit-log?scope=cluster&limit=1")).json();
      $("cluster").textContent = JSON.stringify(page.nodes, null, 2);
    } catch (err) { $("cluster").textContent = "The cluster read failed: " + err.message; }
  })();
}

// ---- wiring ----
function init() {
  $("login").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    $("login-error").textContent = "";
    const r = await fetch("/dashboard/login", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ key: $("key").value }) });
    $("key").value = "";
    if (r.ok) signedIn(await r.json());
    else { try { $("login-error").textContent = (await r.json()).error.message; } catch (_) { $("login-error").textContent = "Sign-in failed (" + r.status + ")"; } }
  });
  $("logout").addEventListener("click", async () => {
    try { await api("/dashboard/logout", { method: "POST" }); } catch (_) { /* signed out either way */ }
    signedOut("Signed out.");
  });
  $("filters").addEventListener("submit", (ev) => { ev.preventDefault(); setState(formToParams()); route(); });
  $("reset").addEventListener("click", () => { setState(new URLSearchParams()); route(); });
  $("f-range").addEventListener("change", () => { const c = $("f-range").value === "custom"; $("f-from").disabled = !c; $("f-to").disabled = !c; if (c && !$("f-from").value) $("f-from").value = localInput(Date.now() - 86400000); });
  $("next-page").addEventListener("click", () => { if (current.next) { cursors.push(current.next); loadPage(); } });
  $("first-page").addEventListener("click", () => { cursors = [null]; loadPage(); });
  $("detail-close").addEventListener("click", () => {
    const p = state(); p.delete("seq"); setState(p); $("detail").hidden = true;
    if (opener && document.contains(opener)) opener.focus();
  });
  $("verify-now").addEventListener("click", verifyNow);
  $("four-eyes-rule").addEventListener("change", loadReviews);
  document.addEventListener("keydown", (ev) => { if (ev.key === "Escape" && !$("detail").hidden) $("detail-close").click(); });
  for (const b of document.querySelectorAll("#nav button")) {
    b.addEventListener("click", () => { const p = b.dataset.view === "explorer" ? formToParams() : new URLSearchParams(); if (b.dataset.view !== "explorer") p.set("view", b.dataset.view); setState(p); route(); });
  }
  window.addEventListener("popstate", () => { if (session) route(); });
  fetch("/dashboard/session", { credentials: "same-origin" }).then((r) => (r.ok ? r.json().then(signedIn) : signedOut()));
}
init();
