"use strict";
// One camera: its live MJPEG stream, its state, and the zone helper. Clicks on the picture become
// a zone (polygon) or a line in normalized units (3 decimals), ready to paste into the config, and
// the current tracks whose anchor (bottom centre of the box) is inside the polygon are listed.

const cameraId = decodeURIComponent(location.pathname.split("/")[2] || "");
const base = "/cameras/" + encodeURIComponent(cameraId);
const img = document.getElementById("stream");
const svg = document.getElementById("drawing");
const points = [];  // normalized [x, y]
let frame = { width: 0, height: 0, tracks: [] };

document.getElementById("title").textContent = cameraId;
document.title = "Vigil: " + cameraId;
img.src = base + "/stream.mjpeg";

function mode() { return document.querySelector("input[name=mode]:checked").value; }
function round3(v) { return Math.round(v * 1000) / 1000; }
function fmt(v) { return round3(v).toFixed(3).replace(/0+$/, "").replace(/\.$/, ".0"); }

function inside(poly, x, y) {  // even-odd rule, poly in the same units as x, y
  let hit = false;
  for (let i = 0, j = poly.length - 1; i < poly.length; j = i++) {
    const [xi, yi] = poly[i], [xj, yj] = poly[j];
    if ((yi > y) !== (yj > y) && x < ((xj - xi) * (y - yi)) / (yj - yi) + xi) hit = !hit;
  }
  return hit;
}

function draw() {
  const w = img.clientWidth, h = img.clientHeight;
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
  const coords = points.map(([x, y]) => `${x * w},${y * h}`).join(" ");
  const shape = mode() === "line" ? "polyline" : "polygon";
  svg.innerHTML = "";  // only our own elements below, built from numbers
  const poly = document.createElementNS("http://www.w3.org/2000/svg", shape);
  poly.setAttribute("points", coords);
  poly.setAttribute("fill", shape === "polygon" ? "rgba(255,215,0,0.2)" : "none");
  poly.setAttribute("stroke", "gold");
  poly.setAttribute("stroke-width", "2");
  svg.append(poly);
  for (const [x, y] of points) {
    const dot = document.createElementNS("http://www.w3.org/2000/svg", "circle");
    dot.setAttribute("cx", x * w); dot.setAttribute("cy", y * h); dot.setAttribute("r", 4);
    dot.setAttribute("fill", "gold");
    svg.append(dot);
  }
}

function snippet() {
  const pts = "[" + points.map(([x, y]) => `[${fmt(x)}, ${fmt(y)}]`).join(", ") + "]";
  if (mode() === "line") {
    return `lines:\n  - id: new_line\n    units: normalized\n    points: ${pts}\n`;
  }
  return `zones:\n  - id: new_zone\n    units: normalized\n    points: ${pts}\n`;
}

function showInside() {
  const list = document.getElementById("inside");
  const items = [];
  if (mode() === "zone" && points.length >= 3 && frame.width > 0) {
    for (const t of frame.tracks) {
      const [x1, , x2, y2] = t.box;
      if (inside(points, (x1 + x2) / 2 / frame.width, y2 / frame.height)) {
        const li = document.createElement("li");
        li.textContent = (t.track_id >= 0 ? "#" + t.track_id + " " : "") + t.class_name;
        items.push(li);
      }
    }
  }
  list.replaceChildren(...items);
}

function update() {
  draw();
  document.getElementById("snippet").textContent = points.length ? snippet() : "";
  showInside();
}

img.addEventListener("click", (ev) => {
  const rect = img.getBoundingClientRect();
  const x = (ev.clientX - rect.left) / rect.width, y = (ev.clientY - rect.top) / rect.height;
  if (mode() === "line" && points.length >= 2) points.length = 0;
  points.push([Math.min(1, Math.max(0, x)), Math.min(1, Math.max(0, y))]);
  update();
});
document.getElementById("clear").addEventListener("click", () => { points.length = 0; update(); });
for (const radio of document.querySelectorAll("input[name=mode]")) {
  radio.addEventListener("change", () => { points.length = 0; update(); });
}
window.addEventListener("resize", draw);

async function refresh() {
  try {
    const [status, tracks] = await Promise.all([
      fetch("/api/status", { cache: "no-store" }).then((r) => r.json()),
      fetch(base.replace("/cameras/", "/api/cameras/") + "/tracks", { cache: "no-store" }).then((r) => (r.ok ? r.json() : null)),
    ]);
    const c = status.cameras.find((cam) => cam.id === cameraId);
    if (c) {
      const state = document.getElementById("state");
      state.textContent = c.state;
      state.className = "state " + c.state;
      document.getElementById("stats").textContent =
        `in ${c.fps_in} fps · out ${c.fps_out} fps · det ${c.detections_per_s}/s · drops ${c.drops} · reconnects ${c.reconnects}`;
    }
    if (tracks) { frame = tracks; showInside(); }
  } catch (err) {
    document.getElementById("stats").textContent = "cannot reach the box: " + err;
  }
  setTimeout(refresh, 1000);
}

refresh();
