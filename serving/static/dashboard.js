// The adclick dashboard: clicks per minute of chosen ads (an SVG chart) and the top ads of the
// last M minutes, from the query API of the same server. No dependencies: the page works offline.
"use strict";

const MINUTE = 60000;
const TOP_ROWS = 20;
const DEFAULT_CHARTED = 5;
const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#db2777",
                "#4b5563", "#65a30d"];
const SVG_NS = "http://www.w3.org/2000/svg";
const CHART = { width: 900, height: 340, left: 56, right: 16, top: 14, bottom: 34 };

const $ = (id) => document.getElementById(id);
const state = { ads: [], country: "", window: 5, span: 30, at: null, follow: true, refresh: 5 };
let timer = null;
let loading = false;
let charted = [];
let refreshes = 0;

function utcMinute(ms, withDate) {
  const iso = new Date(ms).toISOString();
  return withDate ? iso.slice(0, 10) + " " + iso.slice(11, 16) : iso.slice(11, 16);
}

function toInputValue(ms) { return new Date(ms).toISOString().slice(0, 16); }

function fromInputValue(text) {
  const ms = Date.parse(text + ":00Z");
  return Number.isNaN(ms) ? null : ms - (ms % MINUTE);
}

function splitAds(text) {
  return text.split(",").map((ad) => ad.trim()).filter((ad) => ad.length > 0);
}

function readUrl() {
  const query = new URLSearchParams(location.search);
  if (query.has("ads")) state.ads = splitAds(query.get("ads"));
  if (query.has("country")) state.country = query.get("country").toUpperCase();
  if (query.has("window")) state.window = parseInt(query.get("window"), 10) || state.window;
  if (query.has("span")) state.span = parseInt(query.get("span"), 10) || state.span;
  if (query.has("refresh")) state.refresh = parseInt(query.get("refresh"), 10) || 0;
  if (query.has("at")) {
    const at = /^\d+$/.test(query.get("at")) ? Number(query.get("at")) : Date.parse(query.get("at"));
    if (!Number.isNaN(at)) { state.at = at - (at % MINUTE); state.follow = false; }
  }
}

function writeUrl() {
  const query = new URLSearchParams();
  if (state.ads.length) query.set("ads", state.ads.join(","));
  if (state.country) query.set("country", state.country);
  query.set("window", state.window);
  query.set("span", state.span);
  if (!state.follow && state.at !== null) query.set("at", state.at);
  query.set("refresh", state.refresh);
  history.replaceState(null, "", "?" + query.toString());
}

function showControls() {
  $("ads").value = state.ads.join(", ");
  $("country").value = state.country;
  $("window").value = state.window;
  $("span").value = state.span;
  $("follow").checked = state.follow;
  $("at").disabled = state.follow;
  if (state.at !== null) $("at").value = toInputValue(state.at);
  $("refresh").value = String(state.refresh);
}

function readControls() {
  state.ads = splitAds($("ads").value);
  state.country = $("country").value;
  state.window = Math.max(1, parseInt($("window").value, 10) || 1);
  state.span = Math.min(1440, Math.max(2, parseInt($("span").value, 10) || 30));
  state.follow = $("follow").checked;
  if (!state.follow) state.at = fromInputValue($("at").value);
  state.refresh = parseInt($("refresh").value, 10) || 0;
}

async function api(path, params) {
  const url = new URL(path, location.origin);
  for (const [name, value] of Object.entries(params || {})) {
    if (value !== null && value !== undefined && value !== "") url.searchParams.set(name, value);
  }
  const response = await fetch(url);
  let body = {};
  try { body = await response.json(); } catch (ignored) { /* not JSON: the status says enough */ }
  if (!response.ok) throw new Error(body.error || `${response.status} ${response.statusText}`);
  return body;
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

function svg(name, attributes, parent) {
  const element = document.createElementNS(SVG_NS, name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, value);
  if (parent) parent.appendChild(element);
  return element;
}

function niceStep(max, ticks) {
  const raw = Math.max(1, max) / ticks;
  const power = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= raw);
  return Math.max(1, step);
}

function renderChart(series, from, to) {
  const chart = $("chart");
  chart.replaceChildren();
  const legend = $("legend");
  legend.replaceChildren();
  const minutes = (to - from) / MINUTE;
  const plotWidth = CHART.width - CHART.left - CHART.right;
  const plotHeight = CHART.height - CHART.top - CHART.bottom;
  const max = Math.max(0, ...series.flatMap((s) => s.counts));
  const step = niceStep(max, 5);
  const top = Math.max(step, Math.ceil(max / step) * step);
  const x = (i) => CHART.left + (minutes === 1 ? plotWidth / 2 : (i * plotWidth) / (minutes - 1));
  const y = (count) => CHART.top + plotHeight - (count / top) * plotHeight;

  for (let value = 0; value <= top; value += step) {
    svg("line", { class: "grid", x1: CHART.left, x2: CHART.width - CHART.right, y1: y(value), y2: y(value) }, chart);
    svg("text", { class: "axis-label", x: CHART.left - 8, y: y(value) + 4, "text-anchor": "end" }, chart)
      .textContent = value.toLocaleString("en-US");
  }
  const every = Math.max(1, Math.ceil(minutes / 8));
  for (let i = 0; i < minutes; i += every) {
    svg("text", { class: "axis-label", x: x(i), y: CHART.height - 10, "text-anchor": "middle" }, chart)
      .textContent = utcMinute(from + i * MINUTE, false);
  }
  if (!series.length) {
    svg("text", { class: "empty", x: CHART.width / 2, y: CHART.height / 2, "text-anchor": "middle" }, chart)
      .textContent = "no ads to chart";
  }
  series.forEach((s, k) => {
    const color = COLORS[k % COLORS.length];
    const group = svg("g", { class: "series", "data-ad": s.ad_id }, chart);
    svg("polyline", { stroke: color, points: s.counts.map((c, i) => `${x(i)},${y(c)}`).join(" ") }, group);
    s.counts.forEach((count, i) => {
      const minute = s.minutes[i];
      const point = svg("circle", { cx: x(i), cy: y(count), r: minutes > 90 ? 1.5 : 3, fill: color,
                                     "data-ad": s.ad_id, "data-minute": minute, "data-count": count }, group);
      svg("title", {}, point).textContent = `${s.ad_id} · ${utcMinute(minute, true)} UTC · ${count} clicks`;
    });
    const item = document.createElement("li");
    item.dataset.ad = s.ad_id;
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = color;
    const total = s.counts.reduce((a, b) => a + b, 0);
    item.append(swatch, `${s.ad_id} — ${total.toLocaleString("en-US")} clicks`);
    legend.appendChild(item);
  });
}

function renderTop(top) {
  const body = $("top").querySelector("tbody");
  body.replaceChildren();
  const best = Math.max(1, ...top.counts);
  top.ad_ids.forEach((ad, i) => {
    const row = document.createElement("tr");
    row.dataset.ad = ad;
    row.title = "click to add it to or remove it from the chart";
    if (charted.includes(ad)) row.classList.add("charted");
    const cells = [String(i + 1), ad, top.counts[i].toLocaleString("en-US"), ""];
    ["num", "ad", "num", "bar-cell"].forEach((cls, j) => {
      const cell = document.createElement("td");
      cell.className = cls;
      cell.textContent = cells[j];
      row.appendChild(cell);
    });
    const bar = document.createElement("div");
    bar.className = "bar";
    bar.style.width = `${(100 * top.counts[i]) / best}%`;
    row.lastChild.appendChild(bar);
    row.addEventListener("click", () => toggleAd(ad));
    body.appendChild(row);
  });
  if (!top.ad_ids.length) {
    const row = document.createElement("tr");
    const cell = document.createElement("td");
    cell.colSpan = 4;
    cell.textContent = "no clicks in this window";
    row.appendChild(cell);
    body.appendChild(row);
  }
  $("top-caption").textContent =
    `${utcMinute(top.window_start, true)} – ${utcMinute(top.window_end, false)} UTC` +
    (state.country ? ` · ${state.country}` : "");
}

function toggleAd(ad) {
  const ads = state.ads.length ? state.ads.slice() : charted.slice();
  state.ads = ads.includes(ad) ? ads.filter((a) => a !== ad) : ads.concat([ad]);
  showControls();
  writeUrl();
  refresh();
}

async function refresh() {
  if (loading) return;
  loading = true;
  try {
    const status = await api("/v1/status");
    const at = state.follow ? status.latest_minute : state.at;
    $("status").textContent = `${status.store} store · newest minute ` +
      (status.latest_minute === null ? "none yet" : utcMinute(status.latest_minute, true) + " UTC") +
      ` · updated ${new Date().toISOString().slice(11, 19)} UTC`;
    if (at === null || at === undefined) {
      renderTop({ window_start: 0, window_end: 0, ad_ids: [], counts: [] });
      $("top-caption").textContent = "";
      renderChart([], 0, MINUTE);
      showError(state.follow ? "" : "choose the minute to show");
      return;
    }
    if (state.follow) { state.at = at; $("at").value = toInputValue(at); }
    const filter = state.country ? `country=${state.country}` : null;
    const top = await api("/v1/ads/popular_ads", { count: TOP_ROWS, window: state.window, at, filter });
    charted = state.ads.length ? state.ads.slice(0, COLORS.length) : top.ad_ids.slice(0, DEFAULT_CHARTED);
    renderTop(top);
    const from = at - (state.span - 1) * MINUTE;
    const to = at + MINUTE;
    const series = await Promise.all(charted.map((ad) =>
      api(`/v1/ads/${encodeURIComponent(ad)}/clicks_per_minute`, { from, to, filter })));
    renderChart(series, from, to);
    $("chart-caption").textContent =
      `${utcMinute(from, true)} – ${utcMinute(to, false)} UTC` + (state.country ? ` · ${state.country}` : "");
    showError("");
    refreshes += 1;
    document.body.dataset.refreshes = String(refreshes);
  } catch (error) {
    showError(error.message);
  } finally {
    loading = false;
  }
}

function schedule() {
  if (timer) clearInterval(timer);
  timer = state.refresh > 0 ? setInterval(refresh, state.refresh * 1000) : null;
}

function apply(event) {
  if (event) event.preventDefault();
  readControls();
  showControls();
  writeUrl();
  schedule();
  refresh();
}

async function start() {
  readUrl();
  try {
    const { countries } = await api("/v1/countries");
    const select = $("country");
    for (const country of countries) {
      const option = document.createElement("option");
      option.value = country.code;
      option.textContent = `${country.code} — ${country.name}`;
      select.appendChild(option);
    }
  } catch (error) {
    showError(error.message);
  }
  showControls();
  $("controls").addEventListener("submit", apply);
  for (const id of ["country", "refresh", "follow"]) $(id).addEventListener("change", apply);
  schedule();
  refresh();
}

start();
