// The console's one script: live streams (server-sent events), ages that tick, and the
// live flow's lanes. No library; HTML arriving on a stream was rendered (and escaped) by
// the console itself.
"use strict";

function parseTime(text) { const t = Date.parse(text); return Number.isNaN(t) ? null : t; }

function duration(seconds) {
  const s = Math.abs(seconds);
  let text;
  if (s < 1) text = Math.round(s * 1000) + "ms";
  else if (s < 60) text = s.toFixed(1) + "s";
  else if (s < 3600) { const w = Math.floor(s); text = String(Math.floor(w / 60)).padStart(2, "0") + ":" + String(w % 60).padStart(2, "0"); }
  else if (s < 86400) { const w = Math.floor(s); text = Math.floor(w / 3600) + "h" + String(Math.floor(w % 3600 / 60)).padStart(2, "0") + "m"; }
  else { const w = Math.floor(s); text = Math.floor(w / 86400) + "d" + String(Math.floor(w % 86400 / 3600)).padStart(2, "0") + "h"; }
  return text;
}

function tickAges() {
  const now = Date.now();
  for (const el of document.querySelectorAll(".age[data-since]")) {
    const t = parseTime(el.dataset.since);
    if (t === null) continue;
    const s = (now - t) / 1000;
    el.textContent = s >= 0 ? duration(s) + " ago" : "in " + duration(-s);
  }
  const clock = document.querySelector("[data-clock]");
  if (clock) clock.textContent = new Date(now).toISOString().replace("T", " ").slice(0, 23) + " UTC";
}

function liveStatus(state) {
  const el = document.querySelector("[data-live-status]");
  if (!el) return;
  el.classList.toggle("on", state === "on");
  el.classList.toggle("off", state === "off");
  el.textContent = state === "on" ? "live" : state === "off" ? "reconnecting…" : "";
}

function spark(svg, series) {
  if (!svg) return;
  const ns = "http://www.w3.org/2000/svg";
  const values = series || [];
  const max = Math.max(1, ...values);
  const width = 60 / Math.max(1, values.length);
  svg.setAttribute("viewBox", "0 0 60 20");
  while (svg.firstChild) svg.removeChild(svg.firstChild);
  values.forEach((v, i) => {
    const h = v ? Math.max(1, 20 * v / max) : 0;
    const r = document.createElementNS(ns, "rect");
    r.setAttribute("x", String(i * width));
    r.setAttribute("width", String(Math.max(0.5, width - 0.2)));
    r.setAttribute("y", String(20 - h));
    r.setAttribute("height", String(h));
    svg.appendChild(r);
  });
}

function listItems(ul, items, render, empty) {
  while (ul.firstChild) ul.removeChild(ul.firstChild);
  if (!items.length) { const li = document.createElement("li"); li.className = "muted"; li.textContent = empty; ul.appendChild(li); return; }
  for (const item of items) ul.appendChild(render(item));
}

function renderFlow(root, summary) {
  const set = (name, value) => { const el = document.querySelector('[data-flow="' + name + '"]'); if (el) el.textContent = String(value); };
  for (const lane of summary.lanes) {
    const el = root.querySelector('[data-lane="' + lane.id + '"]');
    if (!el) continue;
    for (const field of ["count", "consumed", "rate", "waiting", "dead_letters"]) {
      const f = el.querySelector('[data-field="' + field + '"]');
      if (f && lane[field] !== undefined) f.textContent = String(lane[field]);
    }
    spark(el.querySelector('[data-field="series"]'), lane.series);
    el.classList.toggle("has-dead", (lane.dead_letters || 0) > 0);
    el.classList.toggle("pulse", (lane.rate || 0) > 0);
  }
  set("window", summary.window_s);
  set("created", summary.outcomes.created);
  set("completed", summary.outcomes.completed);
  set("failed", summary.outcomes.failed);
  set("dead_letters", summary.dead_letters);
  set("watch-address", summary.watch.address || "no replica yet");
  const watchError = root.querySelector('[data-flow="watch-error"]');
  if (watchError) { watchError.textContent = summary.watch.error || ""; watchError.hidden = !summary.watch.error; }
  const reasons = root.querySelector('[data-flow="reasons"]');
  if (reasons) listItems(reasons, summary.reasons, (r) => {
    const li = document.createElement("li"); const n = document.createElement("span");
    n.className = "n"; n.textContent = String(r.count); li.appendChild(n);
    li.appendChild(document.createTextNode(" " + r.reason)); return li;
  }, "no failures in the last minute");
  const failures = root.querySelector('[data-flow="recent_failures"]');
  if (failures) listItems(failures, summary.recent_failures, (f) => {
    const li = document.createElement("li"); const a = document.createElement("a");
    a.className = "id"; a.href = "/orders/" + encodeURIComponent(f.order_id); a.textContent = f.order_id;
    li.appendChild(a); li.appendChild(document.createTextNode(" " + f.reason)); return li;
  }, "none");
}

function upsertOrders(table, payload) {
  const body = table.querySelector("[data-rows]");
  if (!body) return;
  const template = document.createElement("tbody");
  template.innerHTML = payload.rows;
  const limit = 50;
  for (const id of payload.drop || []) {
    const gone = body.querySelector('tr[data-id="' + CSS.escape(id) + '"]');
    if (gone) gone.remove();
  }
  const rows = Array.from(template.querySelectorAll("tr[data-id]")).reverse();
  for (const row of rows) {
    const old = body.querySelector('tr[data-id="' + CSS.escape(row.dataset.id) + '"]');
    if (old) old.remove();
    row.classList.add("fresh");
    body.insertBefore(row, body.firstChild);
  }
  while (body.children.length > limit) body.removeChild(body.lastChild);
  const empty = document.querySelector("[data-empty]");
  if (empty && body.children.length) empty.hidden = true;
}

function openStream(el) {
  const source = new EventSource(el.dataset.stream);
  source.onopen = () => liveStatus("on");
  source.onerror = () => liveStatus("off");
  const kind = el.dataset.kind;
  if (kind === "flow") source.addEventListener("flow", (e) => renderFlow(el, JSON.parse(e.data)));
  if (kind === "orders") source.addEventListener("orders", (e) => upsertOrders(el, JSON.parse(e.data)));
  if (kind === "fragment") source.addEventListener("fragment", (e) => {
    const target = document.querySelector(el.dataset.target);
    if (!target) return;
    const focused = document.activeElement && target.contains(document.activeElement);
    target.innerHTML = e.data;  // rendered and escaped by the console
    if (focused) target.focus();
    tickAges();
  });
  window.addEventListener("pagehide", () => source.close());
}

document.addEventListener("DOMContentLoaded", () => {
  for (const el of document.querySelectorAll("[data-stream]")) openStream(el);
  for (const el of document.querySelectorAll("[data-kind=flow] [data-field=series]")) spark(el, []);
  tickAges();
  setInterval(tickAges, 1000);
});
