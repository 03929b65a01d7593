"use strict";
// The camera tiles and the recent events, from /api/status once a second. Every name from the
// config (camera ids, rule ids, class names) goes into the page as text, never as HTML.

function el(tag, attrs, text) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function cameraUrl(id) { return "/cameras/" + encodeURIComponent(id); }

function statsText(c) {
  const age = c.frame_age_ms === null ? "-" : c.frame_age_ms + " ms";
  return `in ${c.fps_in} fps · out ${c.fps_out} fps · det ${c.detections_per_s}/s · age ${age}` +
         ` · drops ${c.drops} · reconnects ${c.reconnects}`;
}

const tiles = new Map();

function tileFor(c) {
  let t = tiles.get(c.id);
  if (t) return t;
  const root = el("article", { class: "tile", "data-camera": c.id });
  const head = el("h2");
  const link = el("a", { href: cameraUrl(c.id) }, c.id);
  const state = el("span", { class: "state" });
  head.append(link, state);
  const img = el("img", { alt: "latest picture of " + c.id, hidden: "" });
  const nopic = el("div", { class: "nopic" }, "no picture yet");
  const stats = el("p", { class: "stats" });
  root.append(head, img, nopic, stats);
  document.getElementById("tiles").append(root);
  t = { root, state, img, nopic, stats, seq: null };
  tiles.set(c.id, t);
  return t;
}

function showCameras(cameras) {
  const seen = new Set();
  for (const c of cameras) {
    seen.add(c.id);
    const t = tileFor(c);
    t.state.textContent = c.state;
    t.state.className = "state " + c.state;
    t.state.title = c.state_reason || "";
    t.stats.textContent = statsText(c);
    t.root.classList.toggle("alert", c.alerts.length > 0);
    if (c.seq !== null && c.seq !== t.seq) {
      t.seq = c.seq;
      t.img.src = cameraUrl(c.id) + "/latest.jpg?seq=" + c.seq;
      t.img.hidden = false;
      t.nopic.hidden = true;
    }
  }
  for (const [id, t] of tiles) {
    if (!seen.has(id)) { t.root.remove(); tiles.delete(id); }
  }
  document.getElementById("summary").textContent = cameras.length + " camera(s)";
}

function showEvents(events) {
  const body = document.querySelector("#events tbody");
  const rows = events.map((e) => {
    const tr = el("tr", { "data-event": e.event_id });
    tr.append(el("td", {}, new Date(e.ts * 1000).toLocaleTimeString()), el("td", {}, e.camera),
              el("td", {}, e.rule), el("td", {}, e.kind), el("td", {}, (e.classes || []).join(", ")),
              el("td", {}, (e.track_ids || []).join(", ")));
    const snap = el("td");
    if (e.snapshot_url) {
      const a = el("a", { href: e.snapshot_url });
      a.append(el("img", { src: e.snapshot_url, alt: "snapshot", class: "snapshot" }));
      snap.append(a);
    }
    const clip = el("td");
    if (e.clip_url) clip.append(el("a", { href: e.clip_url }, "clip"));
    tr.append(snap, clip);
    return tr;
  });
  body.replaceChildren(...rows);
  document.getElementById("no-events").hidden = events.length > 0;
}

async function refresh() {
  try {
    const response = await fetch("/api/status", { cache: "no-store" });
    if (response.ok) {
      const status = await response.json();
      showCameras(status.cameras);
      showEvents(status.events);
    }
  } catch (err) {
    document.getElementById("summary").textContent = "cannot reach the box: " + err;
  }
  setTimeout(refresh, 1000);
}

refresh();
