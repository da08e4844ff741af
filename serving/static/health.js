"use strict";
// The pipeline's health beside the counts: GET /v1/health (serving/health.py), at the dashboard's refresh
// rate. Uses dashboard.js's api() (the bearer token), utcMinute() and state (the refresh setting).

const HEALTH_STALE_SECONDS = 300;  // as ops/prometheus/alerts.yml: a minute not completed for 5 minutes
const HEALTH_DEAD_LETTER_SHARE = 0.01;
const HEALTH_WATERMARK_SECONDS = 600;
let healthRefreshes = 0;
let healthLast = 0;
let healthLoading = false;

function healthNumber(value, digits) {
  if (value === null || value === undefined) return "—";
  return Number(value).toLocaleString("en-US", { maximumFractionDigits: digits || 0 });
}

function healthSeconds(value) {
  if (value === null || value === undefined) return "—";
  if (Math.abs(value) < 120) return `${healthNumber(value, 1)} s`;
  return `${healthNumber(value / 60, 1)} min`;
}

function healthItems(health) {
  const sink = health.sink || {};
  const stream = health.stream;
  const items = [["sink_latest_minute", "newest minute in the sink", sink.latest_minute === null ? "none yet"
    : `${utcMinute(sink.latest_minute, true)} UTC`, sink.latest_minute, false]];
  if (!stream) {
    items.push(["stream", "stream", "not watched (adclick serve --metrics-url)", null, false]);
    return items;
  }
  if (!stream.up) {
    items.push(["stream", "stream", `unreachable: ${stream.error}`, null, true]);
    return items;
  }
  items.push(["stream", "stream", stream.running ? "running" : "starting", null, false]);
  if (!stream.running) return items;
  const readRate = stream.read_per_second;
  const deadRate = stream.dead_letters_per_second;
  const reasons = Object.entries(stream.dead_letters_by_reason || {}).filter(([, n]) => n > 0)
    .map(([reason, n]) => `${reason} ${healthNumber(n)}`).join(", ");
  items.push(
    ["complete_minute", "newest complete minute", stream.complete_minute === null ? "none yet"
      : `${utcMinute(stream.complete_minute, true)} UTC`, stream.complete_minute, false],
    ["freshness_seconds", "freshness", healthSeconds(stream.freshness_seconds), stream.freshness_seconds,
      stream.freshness_seconds > HEALTH_STALE_SECONDS],
    ["watermark_lag_seconds", "watermark lag", healthSeconds(stream.watermark_lag_seconds),
      stream.watermark_lag_seconds, stream.watermark_lag_seconds > HEALTH_WATERMARK_SECONDS],
    ["source_lag_records", "source lag (records)", stream.source_lag_records === null ? "not reported"
      : healthNumber(stream.source_lag_records), stream.source_lag_records, false],
    ["read_per_second", "clicks read / s", healthNumber(readRate, 1), readRate, false],
    ["dead_letters_per_second", "dead letters / s", healthNumber(deadRate, 2), deadRate,
      readRate > 0 && deadRate / readRate > HEALTH_DEAD_LETTER_SHARE],
    ["read", "read", healthNumber(stream.read), stream.read, false],
    ["duplicates", "duplicates", healthNumber(stream.duplicates), stream.duplicates, false],
    ["dead_letters", "dead letters", healthNumber(stream.dead_letters) + (reasons ? ` (${reasons})` : ""),
      stream.dead_letters, false],
    ["late_panes", "late panes", healthNumber(stream.late_panes), stream.late_panes, false],
  );
  if (stream.flagged !== null) items.push(["flagged", "flagged", healthNumber(stream.flagged), stream.flagged, false]);
  items.push(
    ["latency_p50_seconds", "minute → sink p50 / p99", stream.latency_p50_seconds === null ? "—"
      : `${healthSeconds(stream.latency_p50_seconds)} / ${healthSeconds(stream.latency_p99_seconds)}`,
      stream.latency_p50_seconds, false],
    ["rss_bytes", "stream RSS", `${healthNumber(stream.rss_bytes / 1e6)} MB`, stream.rss_bytes, false],
    ["cpu_seconds", "stream CPU", healthSeconds(stream.cpu_seconds), stream.cpu_seconds, false],
  );
  return items;
}

function renderHealth(health) {
  const list = document.getElementById("health");
  list.replaceChildren();
  for (const [key, label, text, value, bad] of healthItems(health)) {
    const item = document.createElement("div");
    item.dataset.health = key;
    if (value !== null && value !== undefined) item.dataset.value = String(value);
    if (bad) item.className = "bad";
    const term = document.createElement("dt");
    term.textContent = label;
    const detail = document.createElement("dd");
    detail.textContent = text;
    item.append(term, detail);
    list.append(item);
  }
  const stream = health.stream;
  document.getElementById("health-caption").textContent = stream ? stream.url : "";
}

async function refreshHealth() {
  if (healthLoading) return;
  healthLoading = true;
  healthLast = Date.now();
  try {
    renderHealth(await api("/v1/health"));
  } catch (error) {
    renderHealth({ sink: {}, stream: { up: false, error: error.message, url: "" } });
  } finally {
    healthLoading = false;
    healthRefreshes += 1;
    document.body.dataset.healthRefreshes = String(healthRefreshes);
  }
}

// Each second: refresh when the dashboard's refresh period has passed ("off" stops it too).
setInterval(() => {
  if (state.refresh > 0 && Date.now() - healthLast >= state.refresh * 1000) refreshHealth();
}, 1000);
refreshHealth();
