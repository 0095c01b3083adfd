// pg_guardian dashboard: the live alert feed (server-sent events), scan progress, bulk selection.
// Values from the server are set with textContent, never as HTML.
"use strict";

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function liveFeed() {
  const feed = document.getElementById("feed");
  const indicator = document.getElementById("live-indicator");
  if (!feed || !window.EventSource) return;
  let refreshTimer = null;
  const source = new EventSource("/events");
  source.addEventListener("open", () => { indicator.textContent = "live"; indicator.className = "badge badge-up"; });
  source.addEventListener("error", () => { indicator.textContent = "reconnecting…"; indicator.className = "badge badge-down"; });
  source.addEventListener("alert", (event) => {
    const data = JSON.parse(event.data);
    const a = data.alert;
    const empty = feed.querySelector(".empty");
    if (empty) empty.remove();
    const old = feed.querySelector(`li[data-id="${CSS.escape(a.id)}"]`);
    if (old) old.remove();
    const item = el("li", "feed-item new");
    item.dataset.id = a.id;
    item.appendChild(el("span", "sev sev-" + a.severity, a.severity));
    item.append(" ");
    item.appendChild(el("span", "env-tag", data.environment));
    item.append(" ");
    item.appendChild(el("b", null, a.type));
    item.append(" ");
    const link = el("a", null, a.message);
    link.href = "/admin/cleanup/" + encodeURIComponent(a.id) + "?env=" + encodeURIComponent(data.environment);
    item.appendChild(link);
    item.append(" ");
    item.appendChild(el("span", "muted small", "just now" + (a.occurrences > 1 ? " · ×" + a.occurrences : "")));
    feed.prepend(item);
    while (feed.children.length > 50) feed.lastElementChild.remove();
    clearTimeout(refreshTimer);
    refreshTimer = setTimeout(refreshCounts, 1500);
  });
  source.addEventListener("status", (event) => {
    const data = JSON.parse(event.data);
    const card = document.getElementById("env-" + data.environment);
    if (!card) return;
    if (data.up !== null) card.dataset.live = data.up ? "up" : "down";
    const badge = card.querySelector(".live-state");
    if (badge && data.up === false) { badge.textContent = "live feed down"; badge.className = "badge badge-down live-state"; badge.title = data.error || ""; }
    if (badge && data.up === true) { badge.textContent = "up"; badge.className = "badge badge-up live-state"; }
  });
}

async function refreshCounts() {
  const response = await fetch("/api/overview", { headers: { Accept: "application/json" } });
  if (!response.ok) return;
  const data = await response.json();
  for (const env of data.environments) {
    if (!env.up) continue;
    for (const [sev, n] of Object.entries(env.data.open_alerts)) {
      const node = document.querySelector(`.count[data-env="${CSS.escape(env.name)}"][data-sev="${sev}"]`);
      if (!node) continue;
      node.querySelector("b").textContent = String(n);
      node.classList.toggle("zero", n === 0);
    }
  }
}

function scanProgress() {
  for (const row of document.querySelectorAll("tr.scan[data-state='running']")) {
    const poll = async () => {
      const response = await fetch("/api/scans/" + encodeURIComponent(row.dataset.scan), { headers: { Accept: "application/json" } });
      if (!response.ok) return;
      const scan = await response.json();
      row.querySelector("progress").value = scan.percent;
      row.querySelector(".pct").textContent = scan.percent + "%";
      row.querySelector(".found").textContent = String(scan.finding_count);
      row.querySelector(".state-text").textContent = scan.state + (scan.error ? ": " + scan.error : "");
      row.dataset.state = scan.state;
      if (scan.state === "running") setTimeout(poll, 500);
    };
    poll();
  }
}

function bulkSelect() {
  const all = document.getElementById("select-all");
  if (!all) return;
  all.addEventListener("change", () => {
    for (const box of document.querySelectorAll("input.pick")) box.checked = all.checked;
  });
}

document.addEventListener("DOMContentLoaded", () => {
  liveFeed();
  scanProgress();
  bulkSelect();
});
