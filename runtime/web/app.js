// The live page: polls the box's JSON and its latest JPEG; no library, nothing from outside the box.
"use strict";

const token = new URLSearchParams(location.search).get("token");
const withToken = (path, extra) => {
  const params = new URLSearchParams(extra || {});
  if (token) params.set("token", token);
  const query = params.toString();
  return query ? `${path}?${query}` : path;
};
const $ = (id) => document.getElementById(id);
const STATUS_MS = 1000; // an operator reads a decision a second; the box keeps its CPU for frames
const EVENTS_MS = 2000;

let shownFrame = null;
let loading = false;

function showImage(frame) {
  if (frame === null || frame === shownFrame || loading) return;
  loading = true;
  const next = new Image();
  next.onload = () => {
    const live = $("live");
    live.src = next.src;
    live.dataset.frame = String(frame);
    shownFrame = frame;
    loading = false;
  };
  next.onerror = () => { loading = false; };
  next.src = withToken("frame.jpg", { frame });
}

function showStatus(s) {
  $("connection").textContent = `connected · run ${s.run || "–"} · ${new Date(s.time * 1000).toLocaleTimeString()}`;
  $("source").textContent = s.source || "";
  if (s.frame === null || s.frame === undefined) return;
  const decision = $("decision");
  decision.textContent = s.decision === "anomaly" ? `ANOMALY · ${s.location}` : "normal";
  decision.className = `decision ${s.decision}`;
  $("score").textContent = s.score.toFixed(3);
  $("threshold").textContent = s.threshold.toFixed(3);
  $("location").textContent = s.location;
  $("fps").textContent = s.fps !== undefined ? s.fps.toFixed(1) : "–";
  $("frame").textContent = String(s.frame);
  $("inspected").textContent = s.inspected ?? "–";
  $("dropped").textContent = s.dropped ?? "–";
  $("event-count").textContent = s.events ?? "–";
  showImage(s.frame);
}

let shownEvents = "";

function showEvents(events) {
  const text = JSON.stringify(events);
  if (text === shownEvents) return; // nothing new: no DOM work, no thumbnail fetched again
  shownEvents = text;
  const list = $("events");
  list.replaceChildren(...events.map((e) => {
    const item = document.createElement("li");
    item.className = "event";
    if (e.thumbnail) {
      const thumb = document.createElement("img");
      thumb.src = withToken(e.thumbnail);
      thumb.alt = `event ${e.event}`;
      item.append(thumb);
    }
    const text = document.createElement("div");
    const title = document.createElement("strong");
    title.textContent = `event ${e.event} · ${e.location || ""} · score ${e.score !== undefined ? Number(e.score).toFixed(3) : "–"}`;
    const verdict = document.createElement("p");
    verdict.textContent = e.verdict || (e.closed_reason ? "verdict pending…" : "open");
    text.append(title, verdict);
    item.append(text);
    return item;
  }));
}

async function poll(path, show, every) {
  try {
    const response = await fetch(withToken(path), { cache: "no-store" });
    if (response.ok) show(await response.json());
    else $("connection").textContent = `the box answered ${response.status}`;
  } catch (err) {
    $("connection").textContent = "the box does not answer; retrying…";
  }
  setTimeout(() => poll(path, show, every), every);
}

poll("status.json", showStatus, STATUS_MS);
poll("events.json", showEvents, EVENTS_MS);
