// The labeler: one frame on a canvas, its body parts placed by clicks and keys.
//
// Coordinates are original-frame pixels with the engine's convention: pixel i is centred on i
// (it spans [i - 0.5, i + 0.5)), so a click at canvas position c maps to (c - offset) / scale - 0.5.
// Keys: click places the current body part and moves to the next unplaced one; drag moves a
// point; W/S or Up/Down: previous/next body part; A/D or Left/Right: previous/next frame;
// Space: next frame that is not fully labeled; O: occluded; X/Delete: clear; C: copy the previous
// frame's points; Ctrl+Z / Ctrl+Shift+Z (Ctrl+Y): undo / redo; Ctrl+S: save; +/- or the wheel:
// zoom, right- or middle-drag: pan, 0: fit. A frame is saved when you leave it.
// A model's prediction, when the project has one for the frame, fills the unplaced points
// (dashed until touched; saving accepts them as "prefilled"). In a calibrated multi-view
// project the other views' labels give each unplaced point a projection (a cross; P places
// them all), the current body part's epipolar curves, and each point's residual (red when the
// views disagree by more than RESIDUAL_PX); the other views of the instant are one click away.

import { COLOURS, api, element, params, query, say, start } from "./app.js";

const HIT_RADIUS = 8; // css px around a point that grabs it
const RESIDUAL_PX = 10; // a view that disagrees with the others by more is marked

const state = {
  project: params.get("p"),
  queue: [], // [{image, view, labeled}]
  bodyparts: [],
  skeleton: [],
  revision: "",
  image: null,
  points: {}, // bodypart -> {x, y, state, origin, touched}
  current: 0,
  undo: [],
  redo: [],
  dirty: false,
  bitmap: null,
  view: { scale: 1, x: 0, y: 0 },
  drag: null,
  geometry: null, // a calibrated multi-view instant: {view, views: {view: {image, residual}}, epipolar, projected}
};

const canvas = () => document.getElementById("canvas");

function snapshot() {
  return JSON.stringify({ points: state.points, current: state.current });
}

function remember() {
  state.undo.push(snapshot());
  if (state.undo.length > 200) state.undo.shift();
  state.redo = [];
  state.dirty = true;
}

function restore(text) {
  const saved = JSON.parse(text);
  state.points = saved.points;
  state.current = saved.current;
  state.dirty = true;
  render();
}

// ---------------------------------------------------------------- geometry

function fit() {
  const c = canvas();
  if (!state.bitmap) return;
  const scale = Math.min(c.clientWidth / state.bitmap.width, c.clientHeight / state.bitmap.height);
  state.view = { scale, x: (c.clientWidth - state.bitmap.width * scale) / 2, y: (c.clientHeight - state.bitmap.height * scale) / 2 };
}

export function toImage(cssX, cssY) {
  return { x: (cssX - state.view.x) / state.view.scale - 0.5, y: (cssY - state.view.y) / state.view.scale - 0.5 };
}

function toCanvas(x, y) {
  return { x: (x + 0.5) * state.view.scale + state.view.x, y: (y + 0.5) * state.view.scale + state.view.y };
}

function nearest(cssX, cssY) {
  let best = null;
  let bestDistance = HIT_RADIUS;
  for (const [name, point] of Object.entries(state.points)) {
    if (point.state !== "labeled") continue;
    const at = toCanvas(point.x, point.y);
    const distance = Math.hypot(at.x - cssX, at.y - cssY);
    if (distance <= bestDistance) {
      best = name;
      bestDistance = distance;
    }
  }
  return best;
}

// ---------------------------------------------------------------- drawing

function render() {
  const c = canvas();
  const ratio = window.devicePixelRatio || 1;
  if (c.width !== Math.round(c.clientWidth * ratio) || c.height !== Math.round(c.clientHeight * ratio)) {
    c.width = Math.round(c.clientWidth * ratio);
    c.height = Math.round(c.clientHeight * ratio);
  }
  Object.assign(c.dataset, { scale: state.view.scale, x: state.view.x, y: state.view.y }); // the view, for tests and scripts
  const g = c.getContext("2d");
  g.setTransform(1, 0, 0, 1, 0, 0);
  g.fillStyle = "#222";
  g.fillRect(0, 0, c.width, c.height);
  g.setTransform(ratio, 0, 0, ratio, 0, 0);
  if (state.bitmap) {
    g.imageSmoothingEnabled = state.view.scale < 4;
    g.drawImage(state.bitmap, state.view.x, state.view.y, state.bitmap.width * state.view.scale, state.bitmap.height * state.view.scale);
  }
  g.lineWidth = 2;
  for (const [a, b] of state.skeleton) {
    const p = state.points[a];
    const q = state.points[b];
    if (!p || !q || p.state !== "labeled" || q.state !== "labeled") continue;
    const from = toCanvas(p.x, p.y);
    const to = toCanvas(q.x, q.y);
    g.strokeStyle = "rgba(255,255,255,0.6)";
    g.beginPath();
    g.moveTo(from.x, from.y);
    g.lineTo(to.x, to.y);
    g.stroke();
  }
  drawGeometry(g);
  state.bodyparts.forEach((name, index) => {
    const point = state.points[name];
    if (!point || point.state !== "labeled") return;
    const at = toCanvas(point.x, point.y);
    g.strokeStyle = COLOURS[index % COLOURS.length];
    g.fillStyle = point.origin === "prefilled" && !point.touched ? "rgba(0,0,0,0)" : COLOURS[index % COLOURS.length];
    g.setLineDash(point.origin === "prefilled" && !point.touched ? [3, 3] : []);
    g.beginPath();
    g.arc(at.x, at.y, index === state.current ? 6 : 4, 0, 2 * Math.PI);
    g.fill();
    g.stroke();
    g.setLineDash([]);
  });
  renderList();
  renderViews();
}

function drawGeometry(g) {
  const geometry = state.geometry;
  if (!geometry) return;
  const name = state.bodyparts[state.current];
  g.lineWidth = 1;
  g.setLineDash([6, 4]);
  g.strokeStyle = COLOURS[state.current % COLOURS.length];
  for (const curve of Object.values(geometry.epipolar[name] || {})) {
    g.beginPath();
    curve.forEach(([x, y], i) => { const at = toCanvas(x, y); if (i) g.lineTo(at.x, at.y); else g.moveTo(at.x, at.y); });
    g.stroke();
  }
  g.setLineDash([]);
  const projected = geometry.views[geometry.view]?.projected || [];
  state.bodyparts.forEach((part, index) => {
    const xy = projected[index];
    if (!xy || state.points[part]?.state === "labeled") return;
    const at = toCanvas(xy[0], xy[1]);
    g.strokeStyle = COLOURS[index % COLOURS.length];
    g.beginPath();
    g.moveTo(at.x - 5, at.y - 5); g.lineTo(at.x + 5, at.y + 5);
    g.moveTo(at.x + 5, at.y - 5); g.lineTo(at.x - 5, at.y + 5);
    g.stroke();
  });
}

function residualOf(index) {
  const geometry = state.geometry;
  if (!geometry || state.dirty) return null; // residuals describe the saved labels
  return geometry.views[geometry.view]?.residual?.[index] ?? null;
}

function renderViews() {
  const strip = document.getElementById("views");
  if (!strip) return;
  const geometry = state.geometry;
  strip.replaceChildren(
    ...(geometry ? Object.entries(geometry.views) : []).map(([view, entry]) =>
      element("button", { type: "button", class: view === geometry.view ? "secondary current" : "secondary", "data-view": view, text: view, onclick: () => open(entry.image).catch((e) => say(e.message, "error")) })),
  );
}

function placeProjected() {
  const projected = state.geometry?.views[state.geometry.view]?.projected || [];
  const missing = state.bodyparts.filter((part, index) => projected[index] && state.points[part]?.state !== "labeled");
  if (!missing.length) return say("nothing to project: no unplaced body part is labeled in two other views");
  remember();
  for (const part of missing) {
    const [x, y] = projected[state.bodyparts.indexOf(part)];
    state.points[part] = { x, y, state: "labeled", origin: "projected", touched: true };
  }
  render();
}

function renderList() {
  const list = document.getElementById("bodyparts");
  list.replaceChildren(
    ...state.bodyparts.map((name, index) => {
      const point = state.points[name];
      const where = !point || point.state === "unlabeled" ? "-" : point.state === "occluded" ? "occluded" : `${point.x.toFixed(1)}, ${point.y.toFixed(1)}`;
      const residual = residualOf(index);
      const item = element("li", { class: index === state.current ? "current" : "", "data-bodypart": name, onclick: () => { state.current = index; render(); } },
        element("span", { class: "swatch", style: { background: COLOURS[index % COLOURS.length] } }),
        element("span", { text: `${name} ` }),
        residual === null ? "" : element("span", { class: residual > RESIDUAL_PX ? "residual bad" : "residual", title: "distance to the other views' triangulation", text: `${residual.toFixed(1)} px` }),
        element("span", { class: "where", text: where }));
      return item;
    }),
  );
  const status = document.getElementById("status");
  const at = state.queue.findIndex((f) => f.image === state.image);
  status.textContent = `${state.image || "no frame"}  (${at + 1} of ${state.queue.length})${state.dirty ? "  unsaved" : ""}`;
}

// ---------------------------------------------------------------- editing

function place(x, y) {
  remember();
  const name = state.bodyparts[state.current];
  state.points[name] = { x, y, state: "labeled", origin: "manual", touched: true };
  const next = state.bodyparts.findIndex((b, i) => i > state.current && (!state.points[b] || state.points[b].state === "unlabeled"));
  if (next >= 0) state.current = next;
  render();
}

function setState(value) {
  remember();
  const name = state.bodyparts[state.current];
  state.points[name] = { x: null, y: null, state: value, origin: "manual", touched: true };
  render();
}

async function copyPrevious() {
  const at = state.queue.findIndex((f) => f.image === state.image);
  if (at <= 0) return say("no previous frame to copy from");
  const previous = await api(`/api/labels/frame?${query({ p: state.project, image: state.queue[at - 1].image })}`);
  remember();
  for (const name of state.bodyparts) {
    const xy = previous.points[name];
    if (xy) state.points[name] = { x: xy[0], y: xy[1], state: "labeled", origin: "copied", touched: true };
  }
  render();
}

function edits(acceptPrefilled) {
  return Object.entries(state.points)
    .filter(([, p]) => p.touched || (acceptPrefilled && p.origin === "prefilled"))
    .map(([bodypart, p]) => ({ bodypart, state: p.state, x: p.state === "labeled" ? p.x : null, y: p.state === "labeled" ? p.y : null, origin: p.origin }));
}

// explicit: Ctrl+S or the button, which also accepts the model's untouched points; leaving a
// frame saves only what was edited, so an unseen prediction never becomes a label by itself
async function save(explicit = false) {
  if (explicit && Object.values(state.points).some((p) => p.origin === "prefilled" && !p.touched)) state.dirty = true;
  if (!state.dirty || !state.image) return true;
  try {
    const answer = await api(`/api/labels/frame?${query({ p: state.project })}`, { method: "POST", body: { image: state.image, base_revision: state.revision, edits: edits(explicit) } });
    state.revision = answer.revision;
    state.dirty = false;
    const entry = state.queue.find((f) => f.image === state.image);
    if (entry) entry.labeled = Object.values(state.points).filter((p) => p.state === "labeled").length;
    say("saved");
    renderList();
    return true;
  } catch (error) {
    say(error.message, "error");
    return false;
  }
}

// ---------------------------------------------------------------- frames

async function open(image) {
  if (!(await save())) return;
  const frame = await api(`/api/labels/frame?${query({ p: state.project, image })}`);
  state.image = image;
  state.revision = frame.revision;
  state.points = {};
  for (const name of state.bodyparts) {
    const xy = frame.points[name];
    const occluded = frame.occluded.includes(name);
    state.points[name] = xy ? { x: xy[0], y: xy[1], state: "labeled", origin: "manual", touched: false } : { x: null, y: null, state: occluded ? "occluded" : "unlabeled", origin: "manual", touched: false };
  }
  await prefill(image);
  state.geometry = frame.view ? await api(`/api/labels/views?${query({ p: state.project, image })}`).then((g) => (g.calibrated ? g : null)) : null;
  state.current = Math.max(0, state.bodyparts.findIndex((b) => state.points[b].state === "unlabeled"));
  state.undo = [];
  state.redo = [];
  state.dirty = false;
  const blob = await (await fetch(`/api/image?${query({ p: state.project, image })}`, { credentials: "same-origin" })).blob();
  state.bitmap = await createImageBitmap(blob);
  fit();
  const url = new URL(window.location.href);
  url.searchParams.set("image", image);
  window.history.replaceState(null, "", url);
  render();
  document.body.dataset.frame = image; // the frame on screen, for tests and scripts (no eval needed)
}

// A model's prediction of the frame, when the project keeps one (sent from the review page or
// the selection): it fills the points nobody placed, dashed until touched.
async function prefill(image) {
  let predicted;
  try {
    predicted = await api(`/api/labels/prefill?${query({ p: state.project, image })}`);
  } catch (error) {
    if (error.status === 404) return; // no prediction kept for this frame
    throw error;
  }
  for (const [name, value] of Object.entries(predicted.points || {})) {
    const point = state.points[name];
    if (point && point.state === "unlabeled" && value && Number.isFinite(value[0])) {
      state.points[name] = { x: value[0], y: value[1], state: "labeled", origin: "prefilled", touched: false };
    }
  }
}

function step(offset, onlyUnfinished = false) {
  const at = state.queue.findIndex((f) => f.image === state.image);
  for (let i = at + offset; i >= 0 && i < state.queue.length; i += offset) {
    if (!onlyUnfinished || state.queue[i].labeled < state.bodyparts.length) return open(state.queue[i].image);
  }
  say(onlyUnfinished ? "every other frame is fully labeled" : "no more frames that way");
}

// ---------------------------------------------------------------- input

function onKey(event) {
  if (event.target.closest("input, textarea, select")) return;
  const key = event.key;
  const ctrl = event.ctrlKey || event.metaKey;
  if (ctrl && key.toLowerCase() === "z" && !event.shiftKey) { if (state.undo.length) { state.redo.push(snapshot()); restore(state.undo.pop()); } }
  else if (ctrl && (key.toLowerCase() === "y" || (key.toLowerCase() === "z" && event.shiftKey))) { if (state.redo.length) { state.undo.push(snapshot()); restore(state.redo.pop()); } }
  else if (ctrl && key.toLowerCase() === "s") save(true);
  else if (ctrl) return;
  else if (key === "w" || key === "ArrowUp") { state.current = (state.current + state.bodyparts.length - 1) % state.bodyparts.length; render(); }
  else if (key === "s" || key === "ArrowDown") { state.current = (state.current + 1) % state.bodyparts.length; render(); }
  else if (key === "a" || key === "ArrowLeft") step(-1);
  else if (key === "d" || key === "ArrowRight") step(1);
  else if (key === " ") step(1, true);
  else if (key === "o") setState("occluded");
  else if (key === "x" || key === "Delete" || key === "Backspace") setState("unlabeled");
  else if (key === "c") copyPrevious().catch((e) => say(e.message, "error"));
  else if (key === "p") placeProjected();
  else if (key === "+" || key === "=") zoom(1.25);
  else if (key === "-") zoom(0.8);
  else if (key === "0") { fit(); render(); }
  else return;
  event.preventDefault();
}

function zoom(factor, cssX, cssY) {
  const c = canvas();
  const x = cssX ?? c.clientWidth / 2;
  const y = cssY ?? c.clientHeight / 2;
  state.view.x = x - (x - state.view.x) * factor;
  state.view.y = y - (y - state.view.y) * factor;
  state.view.scale *= factor;
  render();
}

function attach() {
  const c = canvas();
  c.addEventListener("contextmenu", (e) => e.preventDefault());
  c.addEventListener("mousedown", (event) => {
    if (event.button === 1 || event.button === 2) {
      state.drag = { pan: true, x: event.offsetX, y: event.offsetY };
      return;
    }
    const grabbed = nearest(event.offsetX, event.offsetY);
    if (grabbed) {
      remember();
      state.current = state.bodyparts.indexOf(grabbed);
      state.drag = { point: grabbed, moved: false };
    } else {
      const at = toImage(event.offsetX, event.offsetY);
      place(at.x, at.y);
    }
  });
  c.addEventListener("mousemove", (event) => {
    if (!state.drag) return;
    if (state.drag.pan) {
      state.view.x += event.offsetX - state.drag.x;
      state.view.y += event.offsetY - state.drag.y;
      state.drag.x = event.offsetX;
      state.drag.y = event.offsetY;
    } else {
      const at = toImage(event.offsetX, event.offsetY);
      Object.assign(state.points[state.drag.point], { x: at.x, y: at.y, state: "labeled", touched: true, origin: "manual" });
      state.drag.moved = true;
    }
    render();
  });
  window.addEventListener("mouseup", () => { state.drag = null; });
  c.addEventListener("wheel", (event) => { event.preventDefault(); zoom(event.deltaY < 0 ? 1.15 : 1 / 1.15, event.offsetX, event.offsetY); }, { passive: false });
  window.addEventListener("keydown", onKey);
  window.addEventListener("resize", () => { fit(); render(); });
  window.addEventListener("beforeunload", (event) => { if (state.dirty) event.preventDefault(); });
  document.getElementById("save").addEventListener("click", () => save(true));
  document.getElementById("next").addEventListener("click", () => step(1, true));
}

async function main() {
  if (!state.project) throw new Error("no project: open the labeler from a project's page");
  const queue = await api(`/api/labels?${query({ p: state.project })}`);
  state.queue = queue.frames;
  state.bodyparts = queue.bodyparts;
  state.skeleton = queue.skeleton;
  state.revision = queue.revision;
  attach();
  const first = params.get("image") || (state.queue.find((f) => f.labeled < state.bodyparts.length) || state.queue[0] || {}).image;
  if (!first) {
    say("no frames to label yet: select frames on the project's page first");
    render();
    return;
  }
  await open(first);
}

window.elpLabeler = { state, toImage, save };
start(main);
