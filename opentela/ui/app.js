// The status page: reads ./v1/status every few seconds and draws two tables.
// Plain DOM, no framework; every value from the pool goes in as text (textContent), never as
// markup: labels and model names are whatever a node chose to advertise.
"use strict";

(function () {
  const STATUS_URL = "v1/status";
  const KEY_STORE = "otela.key";
  const UNKNOWN = "\u2014"; // an em dash, with a title saying why
  let refreshS = 5;
  let last = null; // {data, fetchedAt (ms, local clock)}
  let timer = null;

  const $ = (id) => document.getElementById(id);

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined) continue;
      if (k === "text") e.textContent = v;
      else if (k === "class") e.className = v;
      else e.setAttribute(k, v);
    }
    for (const c of children) if (c) e.append(c);
    return e;
  }

  function unknown(why) {
    return el("span", { class: "unknown", title: why, text: UNKNOWN }, el("span", { class: "sr-only", text: " (" + why + ")" }));
  }

  function left(seconds) {
    const m = Math.floor(Math.max(0, seconds) / 60);
    if (m < 60) return m + "m";
    if (m < 1440) return Math.floor(m / 60) + "h" + String(m % 60).padStart(2, "0") + "m";
    return Math.floor(m / 1440) + "d" + String(Math.floor((m % 1440) / 60)).padStart(2, "0") + "h";
  }

  function ago(seconds) {
    const s = Math.max(0, Math.round(seconds));
    if (s < 2) return "just now";
    if (s < 120) return s + "s ago";
    if (s < 7200) return Math.floor(s / 60) + "m ago";
    return Math.floor(s / 3600) + "h ago";
  }

  // The node's clock, now: its generated_at plus the time since we fetched (no client skew).
  function serverNow() {
    return last.data.generated_at + (Date.now() - last.fetchedAt) / 1000;
  }

  function timeLeft(expiresAt, kind) {
    if (expiresAt === null || expiresAt === undefined) {
      return kind === "slurm" ? unknown("the job's end time is not known") : unknown("runs without an end time (always on)");
    }
    const s = expiresAt - serverNow();
    const when = new Date(expiresAt * 1000).toISOString().replace("T", " ").slice(0, 16) + " UTC";
    return el("time", { datetime: new Date(expiresAt * 1000).toISOString(), title: "ends " + when, text: s > 0 ? "in " + left(s) : "expired" });
  }

  function stateBadge(state) {
    return el("span", { class: "state state-" + state }, el("span", { class: "dot", "aria-hidden": "true" }), el("span", { class: "state-text", text: state }));
  }

  function kindBadge(kinds) {
    const frag = document.createDocumentFragment();
    for (const k of kinds) frag.append(el("span", { class: "badge badge-" + k, text: k === "slurm" ? "Slurm" : "24/7" }));
    return frag;
  }

  function num(v, digits, why) {
    return v === null || v === undefined ? unknown(why) : document.createTextNode(Number(v).toFixed(digits));
  }

  function td(label, col, ...children) {
    return el("td", { "data-label": label, "data-col": col }, ...children);
  }

  function shortPeer(p) {
    return p.length > 14 ? p.slice(0, 6) + "\u2026" + p.slice(-6) : p;
  }

  // -- filters -----------------------------------------------------------------------------

  function filters() {
    const kind = document.querySelector('input[name="kind"]:checked');
    return { q: $("f-search").value.trim().toLowerCase(), site: $("f-site").value, kind: kind ? kind.value : "" };
  }

  function matchModel(m, f) {
    if (f.site && !m.sites.includes(f.site)) return false;
    if (f.kind && !m.kinds.includes(f.kind)) return false;
    if (!f.q) return true;
    const hay = [m.id, m.topology, ...m.sites, ...m.slurm_jobs];
    for (const r of m.replica_list) hay.push(...r.peers, r.hostname || "", r.framework || "");
    return hay.some((s) => String(s).toLowerCase().includes(f.q));
  }

  function matchNode(n, f) {
    if (f.site && n.site !== f.site) return false;
    if (f.kind && n.kind !== f.kind) return false;
    if (!f.q) return true;
    const hay = [n.peer_id, n.role, n.hostname || "", n.site || "", n.gpus || "", n.slurm_job_id || "", ...n.models];
    return hay.some((s) => String(s).toLowerCase().includes(f.q));
  }

  function fillSites(sites) {
    const sel = $("f-site");
    const keep = sel.value;
    const have = Array.from(sel.options).slice(1).map((o) => o.value);
    if (have.join("\n") === sites.join("\n")) return;
    while (sel.options.length > 1) sel.remove(1);
    for (const s of sites) sel.append(el("option", { value: s, text: s }));
    if (keep && !sites.includes(keep)) sel.append(el("option", { value: keep, text: keep + " (no node now)" }));
    sel.value = keep;
  }

  // -- drawing -----------------------------------------------------------------------------

  function modelRow(m) {
    const pending = m.replicas - m.ready_replicas;
    const reps = el("span", { class: "replicas", text: String(m.replicas) });
    const repCell = td("Replicas", "replicas", reps);
    if (pending > 0) repCell.append(el("span", { class: "sub", text: " (" + pending + " pending)" }));
    const mins = Math.round(last.data.perf_window_s / 60) + " minutes";
    const rateWhy = "no request this node forwarded in the last " + mins + " measured it";
    const ttftWhy = "no streamed request through this node in the last " + mins;
    const jobs = m.slurm_jobs.length ? document.createTextNode(m.slurm_jobs.join(", ")) : (m.kinds.includes("slurm") ? unknown("job id not reported") : unknown("not a Slurm job: always on"));
    const kind = m.kinds.includes("slurm") ? "slurm" : "always-on";
    return el(
      "tr",
      { "data-model": m.id, "data-state": m.state },
      td("State", "state", stateBadge(m.state)),
      el("th", { scope: "row", "data-label": "Model", "data-col": "model" }, el("span", { class: "model-id", text: m.id }), kindBadge(m.kinds)),
      repCell,
      td("Hardware", "topology", m.topology ? document.createTextNode(m.topology) : unknown("no hardware reported")),
      td("Site", "site", m.sites.length ? document.createTextNode(m.sites.join(", ")) : unknown("no site label")),
      td("Slurm job", "slurm", jobs),
      td("Time left", "left", timeLeft(m.expires_at, kind)),
      td("Load", "load", m.load === null ? unknown("no ready replica reports a load") : document.createTextNode(String(m.load))),
      td("TTFT p50", "ttft", m.ttft_p50_s === null ? unknown(ttftWhy) : document.createTextNode((m.ttft_p50_s * 1000).toFixed(0) + " ms")),
      td("Tokens/s", "tps", num(m.tokens_per_s, 1, rateWhy))
    );
  }

  function nodeRow(n) {
    const peer = el("span", { class: "peer", title: n.peer_id, text: shortPeer(n.peer_id) });
    const peerCell = el("th", { scope: "row", "data-label": "Peer", "data-col": "peer" }, peer);
    if (n.self) peerCell.append(el("span", { class: "badge badge-self", title: "the node serving this page", text: "this node" }));
    if (n.hostname) peerCell.append(el("span", { class: "sub block", text: n.hostname }));
    const role = n.group_role ? n.role + " (" + n.group_role + ")" : n.role;
    const live = n.state === "alive" || n.state === "suspect";
    return el(
      "tr",
      { "data-peer": n.peer_id, "data-state": n.state },
      peerCell,
      td("Role", "role", document.createTextNode(role || UNKNOWN)),
      td("State", "state", stateBadge(n.state)),
      td("Site", "site", n.site ? document.createTextNode(n.site) : unknown("no site label")),
      td("GPUs", "gpus", n.gpus ? document.createTextNode(n.gpus) : unknown("no GPU reported")),
      td("Load", "load", n.load === null ? unknown(live ? "load not reported" : "not in the pool now") : document.createTextNode(String(n.load))),
      td("Last seen", "seen", n.self ? document.createTextNode("now") : n.last_seen_s === null ? unknown("never heard from directly") : document.createTextNode(ago(n.last_seen_s))),
      td("Models", "models", n.models.length ? document.createTextNode(n.models.join(", ")) : unknown(live ? "serves no model" : "not in the pool now")),
      td("Time left", "left", timeLeft(n.expires_at, n.kind))
    );
  }

  function draw() {
    if (!last) return;
    const d = last.data;
    const f = filters();
    fillSites(d.sites);
    const models = d.models.filter((m) => matchModel(m, f));
    const nodes = d.nodes.filter((n) => matchNode(n, f));
    $("models").tBodies[0].replaceChildren(...models.map(modelRow));
    $("nodes").tBodies[0].replaceChildren(...nodes.map(nodeRow));
    $("models-count").textContent = "(" + (models.length === d.models.length ? d.models.length : models.length + " of " + d.models.length) + ")";
    $("nodes-count").textContent = "(" + (nodes.length === d.nodes.length ? d.nodes.length : nodes.length + " of " + d.nodes.length) + ")";
    const filtered = f.q || f.site || f.kind;
    showEmpty("models-empty", models.length === 0, d.models.length === 0 ? "No model is served by the pool right now." : "No model matches the filters.");
    showEmpty("nodes-empty", nodes.length === 0, filtered ? "No node matches the filters." : "No node known.");
    const t = d.totals;
    $("summary").textContent = t.ready_models + " of " + t.models + " models ready \u00b7 " + t.nodes + " live nodes \u00b7 " + t.gpus + " GPUs \u00b7 " + (d.sites.length ? d.sites.length + " sites" : "no site labels");
    $("about").textContent = "Answered by node " + shortPeer(d.node.peer_id || "?") + " (opentela " + (d.node.version || "?") + "). TTFT and tokens/s: medians over the streamed requests this node forwarded in the last " + Math.round(d.perf_window_s / 60) + " minutes. Load: requests in flight.";
  }

  function showEmpty(id, show, text) {
    const p = $(id);
    p.hidden = !show;
    p.textContent = show ? text : "";
  }

  function setRefresh(text, stale) {
    const r = $("refresh");
    r.textContent = text;
    r.classList.toggle("stale", !!stale);
  }

  // -- fetching ----------------------------------------------------------------------------

  async function refresh() {
    clearTimeout(timer);
    const headers = { Accept: "application/json" };
    const key = sessionStorage.getItem(KEY_STORE);
    if (key) headers.Authorization = "Bearer " + key;
    try {
      const resp = await fetch(STATUS_URL, { headers, cache: "no-store" });
      if (resp.status === 401) {
        $("auth").hidden = false;
        setRefresh(key ? "The API key was refused; enter another." : "This pool needs an API key to show its status.", true);
        return; // no timer: the form starts the next refresh
      }
      if (!resp.ok) throw new Error("HTTP " + resp.status);
      const data = await resp.json();
      $("auth").hidden = true;
      last = { data, fetchedAt: Date.now() };
      refreshS = Math.max(1, Number(data.refresh_s) || refreshS);
      draw();
      setRefresh("Updated " + new Date().toLocaleTimeString() + "; refreshes every " + refreshS + " s.", false);
    } catch (err) {
      const since = last ? " Showing what the node said " + ago((Date.now() - last.fetchedAt) / 1000) + "." : "";
      setRefresh("Could not reach the node (" + err.message + "); retrying." + since, true);
    }
    timer = setTimeout(refresh, refreshS * 1000);
  }

  function start() {
    $("filters").addEventListener("input", draw);
    $("filters").addEventListener("change", draw); // a select or radio that sent no "input"
    $("filters").addEventListener("submit", (e) => e.preventDefault());
    $("auth-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const v = $("auth-key").value.trim();
      if (v) sessionStorage.setItem(KEY_STORE, v);
      else sessionStorage.removeItem(KEY_STORE);
      $("auth-key").value = "";
      refresh();
    });
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden) refresh();
    });
    refresh();
  }

  document.addEventListener("DOMContentLoaded", start);
})();
