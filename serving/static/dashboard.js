// The adclick dashboard: clicks per minute of chosen ads (an SVG chart) and the top ads of the
// last M minutes, from the query API of the same server. No dependencies: the page works offline.
"use strict";

const MINUTE = 60000;
const TOP_ROWS = 20;
const DEFAULT_CHARTED = 5;
const AUTO_SPAN = 60; // minutes an empty span looks back; those before the charted ads' first click are left out
const MAX_SPAN = 1440; // the most clicks_per_minute answers for: a day
const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#db2777",
                "#4b5563", "#65a30d"];
const SVG_NS = "http://www.w3.org/2000/svg";
// Pixels: the chart is drawn at the size it has on the page, so its text keeps its size on a phone.
const CHART = { right: 24, top: 14, bottom: 34, charWidth: 7.5 }; // charWidth: of a digit in the 12 px font
const LABEL_GAP = 16; // pixels at least between two time labels
const LABEL_EVERY = [1, 2, 5, 10, 15, 20, 30, 60, 120, 180, 360, 720, 1440]; // minutes between time labels

const $ = (id) => document.getElementById(id);
// span null: chosen by the data (AUTO_SPAN).
const state = { ads: [], country: "", window: 5, span: null, at: null, follow: true, refresh: 5 };
let drawn = null; // the chart's last data, redrawn when the page's width changes
let timer = null;
let loading = false;
let stale = false;
let charted = [];
let refreshes = 0;

function utcMinute(ms, withDate) {
  const iso = new Date(ms).toISOString();
  return withDate ? iso.slice(0, 10) + " " + iso.slice(11, 16) : iso.slice(11, 16);
}

function utcRange(from, to) {
  const sameDay = new Date(from).toISOString().slice(0, 10) === new Date(to).toISOString().slice(0, 10);
  return `${utcMinute(from, true)} – ${utcMinute(to, !sameDay)} UTC`;
}

function toInputValue(ms) { return utcMinute(ms, true); }

function fromInputValue(text) {
  const parts = /^(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2})$/.exec(text.trim());
  const ms = parts ? Date.parse(`${parts[1]}T${parts[2]}:00Z`) : NaN;
  return Number.isNaN(ms) ? null : ms;
}

function spanOf(text) {
  const span = parseInt(text, 10);
  return Number.isNaN(span) ? null : Math.min(MAX_SPAN, Math.max(2, span));
}

function splitAds(text) {
  return text.split(",").map((ad) => ad.trim()).filter((ad) => ad.length > 0);
}

function readUrl() {
  const query = new URLSearchParams(location.search);
  if (query.has("ads")) state.ads = splitAds(query.get("ads"));
  if (query.has("country")) state.country = query.get("country").toUpperCase();
  if (query.has("window")) state.window = parseInt(query.get("window"), 10) || state.window;
  if (query.has("span")) state.span = spanOf(query.get("span"));
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
  if (state.span !== null) query.set("span", state.span);
  if (!state.follow && state.at !== null) query.set("at", state.at);
  query.set("refresh", state.refresh);
  history.replaceState(null, "", "?" + query.toString());
}

function showControls() {
  $("ads").value = state.ads.join(", ");
  $("country").value = state.country;
  $("window").value = state.window;
  $("span").value = state.span === null ? "" : state.span;
  $("follow").checked = state.follow;
  $("at").disabled = state.follow;
  if (state.at !== null) $("at").value = toInputValue(state.at);
  $("refresh").value = String(state.refresh);
}

function readControls() {
  state.ads = splitAds($("ads").value);
  state.country = $("country").value;
  state.window = Math.max(1, parseInt($("window").value, 10) || 1);
  state.span = spanOf($("span").value);
  state.follow = $("follow").checked;
  if (!state.follow) state.at = fromInputValue($("at").value);
  state.refresh = parseInt($("refresh").value, 10) || 0;
}

// The bearer token (adclick serve --auth-token-file) from the URL's fragment, #token=..., which no request sends:
// kept in sessionStorage (this tab only) and taken off the address bar at once.
const TOKEN_KEY = "adclick-token";
const tokenInFragment = new URLSearchParams(location.hash.slice(1)).get("token");
if (tokenInFragment) {
  sessionStorage.setItem(TOKEN_KEY, tokenInFragment);
  history.replaceState(null, "", location.pathname + location.search);
}

function withToken(token) {
  return token ? { headers: { Authorization: `Bearer ${token}` } } : {};
}

async function api(path, params) {
  const url = new URL(path, location.origin);
  for (const [name, value] of Object.entries(params || {})) {
    if (value !== null && value !== undefined && value !== "") url.searchParams.set(name, value);
  }
  let used = sessionStorage.getItem(TOKEN_KEY);
  let response = await fetch(url, withToken(used));
  if (response.status === 401) {  // adclick serve --auth-token-file: ask once, keep it for this tab only
    if (sessionStorage.getItem(TOKEN_KEY) === used) {
      const typed = (window.prompt("This adclick API needs its bearer token:") || "").trim();
      if (typed) sessionStorage.setItem(TOKEN_KEY, typed);
    }
    used = sessionStorage.getItem(TOKEN_KEY);
    if (used) response = await fetch(url, withToken(used));
  }
  let body = {};
  try { body = await response.json(); } catch (ignored) { /* not JSON: the status says enough */ }
  if (!response.ok) throw new Error(body.error || `${response.status} ${response.statusText}`);
  return body;
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

function showNotice(message) {
  $("notice").textContent = message;
  $("notice").hidden = !message;
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
  const width = Math.max(240, Math.round(chart.getBoundingClientRect().width) || 900);
  const height = Math.round(Math.min(340, Math.max(220, width * 0.38)));
  chart.setAttribute("viewBox", `0 0 ${width} ${height}`);
  chart.setAttribute("height", height);
  const minutes = (to - from) / MINUTE;
  const max = Math.max(0, ...series.flatMap((s) => s.counts));
  const step = niceStep(max, 5);
  const top = Math.max(step, Math.ceil(max / step) * step);
  const left = 14 + CHART.charWidth * top.toLocaleString("en-US").length;
  const plotWidth = width - left - CHART.right;
  const plotHeight = height - CHART.top - CHART.bottom;
  const perMinute = plotWidth / Math.max(1, minutes - 1); // pixels
  const x = (i) => left + (minutes === 1 ? plotWidth / 2 : i * perMinute);
  const y = (count) => CHART.top + plotHeight - (count / top) * plotHeight;

  for (let value = 0; value <= top; value += step) {
    svg("line", { class: "grid", x1: left, x2: width - CHART.right, y1: y(value), y2: y(value) }, chart);
    svg("text", { class: "axis-label", x: left - 8, y: y(value) + 4, "text-anchor": "end" }, chart)
      .textContent = value.toLocaleString("en-US");
  }
  // Labels on round minutes, as many as fit side by side.
  const labelWidth = CHART.charWidth * 5 + LABEL_GAP;
  const every = LABEL_EVERY.find((e) => e * perMinute >= labelWidth) || MAX_SPAN;
  for (let i = 0; i < minutes; i += 1) {
    const minute = from + i * MINUTE;
    if (minutes > 1 && (minute / MINUTE) % every !== 0) continue;
    svg("text", { class: "axis-label", x: x(i), y: height - 10, "text-anchor": "middle" }, chart)
      .textContent = utcMinute(minute, false);
  }
  if (!series.length) {
    svg("text", { class: "empty", x: width / 2, y: height / 2, "text-anchor": "middle" }, chart)
      .textContent = "no ads to chart";
  }
  series.forEach((s) => {
    const group = svg("g", { class: "series", "data-ad": s.ad_id }, chart);
    svg("polyline", { stroke: s.color, points: s.counts.map((c, i) => `${x(i)},${y(c)}`).join(" ") }, group);
    s.counts.forEach((count, i) => {
      const minute = s.minutes[i];
      const point = svg("circle", { cx: x(i), cy: y(count), r: perMinute < 8 ? 1.5 : 3, fill: s.color,
                                     "data-ad": s.ad_id, "data-minute": minute, "data-count": count }, group);
      svg("title", {}, point).textContent = `${s.ad_id} · ${utcMinute(minute, true)} UTC · ${count} clicks`;
    });
    const item = document.createElement("li");
    item.dataset.ad = s.ad_id;
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = s.color;
    const total = s.counts.reduce((a, b) => a + b, 0);
    item.append(swatch, `${s.ad_id} — ${total.toLocaleString("en-US")} clicks`);
    legend.appendChild(item);
  });
}

function draw() {
  if (drawn) renderChart(drawn.series, drawn.from, drawn.to);
}

// Where an automatic span starts: the first minute in which a charted ad has clicks.
function firstMinuteWithClicks(series, from) {
  const firsts = series.map((s) => s.counts.findIndex((count) => count > 0)).filter((i) => i >= 0);
  return firsts.length ? from + Math.min(...firsts) * MINUTE : from;
}

function since(s, from, start) {
  const skip = (start - from) / MINUTE;
  return { ...s, minutes: s.minutes.slice(skip), counts: s.counts.slice(skip) };
}

function topMessage(text) {
  const body = $("top").querySelector("tbody");
  const row = document.createElement("tr");
  const cell = document.createElement("td");
  cell.colSpan = 4;
  cell.textContent = text;
  row.appendChild(cell);
  body.replaceChildren(row);
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
  if (!top.ad_ids.length) topMessage("no clicks in this window");
  $("top-caption").textContent =
    utcRange(top.window_start, top.window_end) + (state.country ? ` · ${state.country}` : "");
}

function toggleAd(ad) {
  const ads = state.ads.length ? state.ads.slice() : charted.slice();
  state.ads = ads.includes(ad) ? ads.filter((a) => a !== ad) : ads.concat([ad]);
  showControls();
  writeUrl();
  refresh();
}

async function refresh() {
  if (loading) { stale = true; return; } // asked while a refresh is on its way: once more after it
  loading = true;
  stale = false;
  const errors = [];
  const notes = [];
  try {
    const status = await api("/v1/status");
    const maxWindow = status.max_window_minutes;
    $("window").max = String(maxWindow);
    const at = state.follow ? status.latest_minute : state.at;
    $("status").textContent = `${status.store} store · newest minute ` +
      (status.latest_minute === null ? "none yet" : utcMinute(status.latest_minute, true) + " UTC") +
      ` · updated ${new Date().toISOString().slice(11, 19)} UTC`;
    if (at === null || at === undefined) {
      topMessage("no clicks in this window");
      $("top-caption").textContent = "";
      drawn = { series: [], from: 0, to: MINUTE };
      draw();
      $("chart-caption").textContent = "";
      if (!state.follow) errors.push("up to: enter a minute as YYYY-MM-DD HH:MM (UTC, 24-hour)");
      return;
    }
    if (state.follow) { state.at = at; $("at").value = toInputValue(at); }
    const filter = state.country ? `country=${state.country}` : null;
    const topWindow = Math.min(state.window, maxWindow);
    if (state.window > topWindow) {
      notes.push(`Top ads of the last ${topWindow} minutes, not ${state.window}: the API ranks at most ${topWindow}.`);
    }
    let top = null;
    try {
      top = await api("/v1/ads/popular_ads", { count: TOP_ROWS, window: topWindow, at, filter });
      renderTop(top);
    } catch (error) {
      errors.push(`top ads: ${error.message}`);
      topMessage(`no ranking: ${error.message}`);
    }
    const wanted = state.ads.length ? state.ads : top ? top.ad_ids.slice(0, DEFAULT_CHARTED) : [];
    charted = wanted.slice(0, COLORS.length);
    if (wanted.length > charted.length) {
      notes.push(`${wanted.length} ads asked: the chart shows the first ${charted.length}, one colour each ` +
                 `(not charted: ${wanted.slice(charted.length).join(", ")}).`);
    }
    const to = at + MINUTE;
    const from = at - ((state.span || AUTO_SPAN) - 1) * MINUTE;
    const answers = await Promise.allSettled(charted.map((ad) =>
      api(`/v1/ads/${encodeURIComponent(ad)}/clicks_per_minute`, { from, to, filter })));
    const series = [];
    answers.forEach((answer, k) => {
      if (answer.status === "fulfilled") series.push({ ...answer.value, color: COLORS[k] });
      else errors.push(`${charted[k]}: ${answer.reason.message}`);
    });
    const start = state.span === null ? firstMinuteWithClicks(series, from) : from;
    drawn = { series: series.map((s) => since(s, from, start)), from: start, to };
    draw();
    $("chart-caption").textContent = utcRange(start, to) + (state.country ? ` · ${state.country}` : "");
    refreshes += 1;
    document.body.dataset.refreshes = String(refreshes);
  } catch (error) {
    errors.push(error.message);
  } finally {
    showError(errors.join(" · "));
    showNotice(notes.join(" "));
    loading = false;
    if (stale) refresh();
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
  let width = 0;
  new ResizeObserver(() => {
    const now = $("chart").getBoundingClientRect().width;
    if (Math.abs(now - width) >= 1) { width = now; draw(); }
  }).observe($("chart-panel"));
}

start();
