// The review: a video with a model's, an ensemble's or a rig's reprojected keypoints over it,
// their traces under it, the worst frames (to send to the labeler), and "did this round help".
//
// Frames are decoded on the server (exact frame numbers); keypoints come in pages of frames and
// traces by range, decimated to about the canvas's width with every spike kept, so a long video's
// predictions never come to the page whole. Keys: Space play/pause, Left/Right one frame,
// Shift+Left/Right ten frames.

import { COLOURS, api, element, params, query, say, start } from "./app.js";

const KEYPOINT_PAGE = 250; // frames of keypoints per request
const MAX_PAGES = 40;
const TRACE_HEIGHT = 84; // css px per series
const TRACE_SERIES = ["x", "y", "likelihood", "posterior_sd", "ensemble_sd", "temporal_norm"];
const LOW_LIKELIHOOD = 0.5; // drawn hollow below this
const SERIES_LABELS = { x: "x (px)", y: "y (px)", likelihood: "likelihood", posterior_sd: "posterior sd (px)", ensemble_sd: "ensemble sd (px)", temporal_norm: "temporal norm (px)" };

const state = {
  project: params.get("p"),
  bodyparts: [], // the project's, for colours and the skeleton
  skeleton: [],
  videos: [],
  video: null,
  info: null, // n_frames, fps, width, height
  files: [],
  file: null,
  table: null, // what /api/review/table says of the file
  frame: 0,
  playing: false,
  bitmap: null,
  keypoints: null, // {bodyparts, points, sd} of the frame on screen
  shown: -1, // the frame whose bitmap is on screen
  request: 0, // the latest frame request (older answers are dropped)
  pages: new Map(), // page start -> {frames, points, posterior_sd}
  hidden: new Set(), // body parts whose traces are hidden
  range: null, // [start, stop) of the traces
  traces: null,
  plots: [], // [{series, canvas, image, min, max}]
};

const $ = (id) => document.getElementById(id);

function colourOf(bodypart) {
  const index = state.bodyparts.indexOf(bodypart);
  const at = index >= 0 ? index : state.table.bodyparts.indexOf(bodypart);
  return COLOURS[at % COLOURS.length];
}

// ---------------------------------------------------------------- sources

async function loadVideo(video) {
  state.video = video;
  state.playing = false;
  const answer = await api(`/api/review/sources?${query({ p: state.project, video })}`);
  state.info = answer;
  const sources = answer.files.filter((f) => f.kind !== "diagnostics");
  state.files = sources.filter(readable);
  const select = $("source");
  select.replaceChildren(...sources.map((f) => element("option", { value: f.file, text: sourceLabel(f), disabled: !readable(f) })));
  if (answer.pipeline && answer.pipeline.error) say(answer.pipeline.error, "error");
  $("offers").replaceChildren(
    ...answer.models_without_predictions.map((m) => element("button", { type: "button", class: "secondary", "data-model": m.path, text: `predict with ${m.model}`, onclick: () => predict(m) })),
  );
  const slider = $("slider");
  slider.max = String(answer.n_frames - 1);
  state.pages.clear();
  if (!state.files.length) {
    state.file = null;
    state.table = null;
    if (sources.length) say(`the pipeline's files about this video cannot be read here: ${sources[0].state}`, "error");
    else say(answer.models_without_predictions.length ? "no predictions of this video yet: predict it with a model" : "no predictions of this video in the project");
  } else {
    const wanted = params.get("file");
    await loadFile(state.files.some((f) => f.file === wanted) ? wanted : state.files[0].file);
  }
  await show(Math.min(Number(params.get("frame") || 0), answer.n_frames - 1));
}

// a pipeline row's file is listed even where the app may not read it (outside its roots)
function readable(f) {
  return !f.table || f.state === "readable";
}

function sourceLabel(f) {
  if (!f.table) return `${f.model ? `${f.model}: ` : ""}${f.file} (${f.kind})`;
  return `${f.table} ${f.model}: ${readable(f) ? f.location : `${f.stored}, ${f.state}`} (${f.kind})`;
}

async function loadFile(file) {
  state.file = file;
  $("source").value = file;
  state.table = await api(`/api/review/table?${query({ p: state.project, file })}`);
  state.pages.clear();
  state.range = [state.table.first_frame, state.table.last_frame + 1];
  renderLegend();
  const criterion = $("criterion");
  criterion.replaceChildren(...Object.entries(state.table.criteria).map(([name, text]) => element("option", { value: name, text })));
  // an ensemble's smoothed file has the posterior sd; its likelihood is the members' mean
  if ("posterior_sd" in state.table.criteria) criterion.value = "posterior_sd";
  await Promise.all([loadTraces(), loadWorst()]);
}

async function predict(model) {
  const button = document.querySelector(`button[data-model="${CSS.escape(model.path)}"]`);
  if (button) { button.disabled = true; button.textContent = `predicting with ${model.model}...`; }
  try {
    let answer = await api(`/api/review/predict?${query({ p: state.project })}`, { method: "POST", body: { model: model.path, video: state.video } });
    while (answer.state === "queued" || answer.state === "running") {
      await new Promise((resolve) => setTimeout(resolve, 2000));
      answer = await api(`/api/review/predict?${query({ p: state.project, job: answer.job })}`);
    }
    say(`${model.model} predicted ${state.video}`);
    params.set("file", answer.file);
    await loadVideo(state.video);
  } catch (error) {
    say(error.message, "error");
    if (button) { button.disabled = false; button.textContent = `predict with ${model.model}`; }
  }
}

// ---------------------------------------------------------------- frames

async function keypointsAt(frame) {
  if (!state.table || !state.table.has_positions) return null;
  const first = Math.floor(frame / KEYPOINT_PAGE) * KEYPOINT_PAGE;
  let page = state.pages.get(first);
  if (!page) {
    page = api(`/api/review/keypoints?${query({ p: state.project, file: state.file, start: first, stop: first + KEYPOINT_PAGE })}`);
    page.catch(() => state.pages.delete(first)); // asked again next time
    state.pages.set(first, page);
    if (state.pages.size > MAX_PAGES) state.pages.delete(state.pages.keys().next().value);
  }
  const data = await page;
  const row = data.frames.indexOf(frame);
  if (row < 0) return null;
  return { bodyparts: data.bodyparts, points: data.points[row], sd: data.posterior_sd ? data.posterior_sd[row] : null };
}

async function show(frame) {
  if (!state.info) return;
  frame = Math.max(0, Math.min(state.info.n_frames - 1, Math.round(frame)));
  state.frame = frame;
  const request = ++state.request;
  const [blob, keypoints] = await Promise.all([
    fetch(`/api/frame?${query({ p: state.project, video: state.video, frame, width: frameWidth() })}`, { credentials: "same-origin" }).then((r) => {
      if (!r.ok) return r.json().then((e) => { throw new Error(e.error); });
      return r.blob();
    }),
    keypointsAt(frame),
  ]);
  if (request !== state.request) return; // a newer frame was asked for meanwhile
  state.bitmap = await createImageBitmap(blob);
  state.keypoints = keypoints;
  state.shown = frame;
  renderFrame();
  renderCursor();
  $("slider").value = String(frame);
  $("position").textContent = `frame ${frame} of ${state.info.n_frames - 1}  (${(frame / state.info.fps).toFixed(2)} s)`;
  document.body.dataset.frame = String(frame); // the frame on screen, for tests (no eval needed)
  if (!state.playing) {
    const url = new URL(window.location.href);
    url.searchParams.set("video", state.video);
    if (state.file) url.searchParams.set("file", state.file);
    url.searchParams.set("frame", String(frame));
    window.history.replaceState(null, "", url);
  }
}

// the width to ask the server for: what the canvas shows in device pixels (in steps of 64, so
// that a resized window reuses the server's cache), never more than the video's (0: as it is)
function frameWidth() {
  const canvas = $("frame");
  const scale = Math.min(canvas.clientWidth / state.info.width, canvas.clientHeight / state.info.height);
  const wanted = Math.ceil((state.info.width * scale * (window.devicePixelRatio || 1)) / 64) * 64;
  return wanted >= state.info.width ? 0 : wanted;
}

function fitCanvas(canvas) {
  const ratio = window.devicePixelRatio || 1;
  const width = Math.round(canvas.clientWidth * ratio);
  const height = Math.round(canvas.clientHeight * ratio);
  if (canvas.width !== width || canvas.height !== height) {
    canvas.width = width;
    canvas.height = height;
  }
  const g = canvas.getContext("2d");
  g.setTransform(ratio, 0, 0, ratio, 0, 0);
  return g;
}

function renderFrame() {
  const canvas = $("frame");
  const g = fitCanvas(canvas);
  g.fillStyle = "#222";
  g.fillRect(0, 0, canvas.clientWidth, canvas.clientHeight);
  if (!state.bitmap) return;
  const w = state.info.width;
  const h = state.info.height;
  const scale = Math.min(canvas.clientWidth / w, canvas.clientHeight / h);
  const ox = (canvas.clientWidth - w * scale) / 2;
  const oy = (canvas.clientHeight - h * scale) / 2;
  g.imageSmoothingEnabled = scale < 4;
  g.drawImage(state.bitmap, ox, oy, w * scale, h * scale);
  const kp = state.keypoints;
  if (!kp) return;
  // pixel i is centred on i: the engine's convention
  const at = (x, y) => ({ x: (x + 0.5) * scale + ox, y: (y + 0.5) * scale + oy });
  const where = Object.fromEntries(kp.bodyparts.map((b, k) => [b, kp.points[k]]));
  g.lineWidth = 1.5;
  g.strokeStyle = "rgba(255,255,255,0.55)";
  for (const [a, b] of state.skeleton) {
    const p = where[a];
    const q = where[b];
    if (!p || !q || p[0] === null || q[0] === null) continue;
    const from = at(p[0], p[1]);
    const to = at(q[0], q[1]);
    g.beginPath();
    g.moveTo(from.x, from.y);
    g.lineTo(to.x, to.y);
    g.stroke();
  }
  kp.bodyparts.forEach((name, k) => {
    const [x, y, likelihood] = kp.points[k];
    if (x === null || y === null || state.hidden.has(name)) return;
    const p = at(x, y);
    const colour = colourOf(name);
    if (kp.sd && kp.sd[k] !== null && kp.sd[k] * scale > 3) {
      g.strokeStyle = colour;
      g.globalAlpha = 0.5;
      g.beginPath();
      g.arc(p.x, p.y, kp.sd[k] * scale, 0, 2 * Math.PI);
      g.stroke();
      g.globalAlpha = 1;
    }
    g.strokeStyle = colour;
    g.fillStyle = likelihood !== null && likelihood >= LOW_LIKELIHOOD ? colour : "rgba(0,0,0,0)";
    g.lineWidth = 2;
    g.beginPath();
    g.arc(p.x, p.y, 4, 0, 2 * Math.PI);
    g.fill();
    g.stroke();
  });
}

async function play() {
  if (state.playing) {
    state.playing = false;
    return;
  }
  state.playing = true;
  $("play").textContent = "pause";
  document.body.dataset.playing = "1";
  const interval = 1000 / (state.info.fps || 30);
  try {
    while (state.playing && state.frame < state.info.n_frames - 1) {
      const began = performance.now();
      await show(state.frame + 1);
      const left = interval - (performance.now() - began);
      if (left > 0) await new Promise((resolve) => setTimeout(resolve, left));
    }
  } finally {
    state.playing = false;
    $("play").textContent = "play";
    delete document.body.dataset.playing;
    show(state.frame);
  }
}

// ---------------------------------------------------------------- traces

async function loadTraces() {
  const host = $("traces");
  if (!state.table) {
    host.replaceChildren();
    state.plots = [];
    return;
  }
  const series = TRACE_SERIES.filter((s) => state.table.series.includes(s));
  const width = Math.max(200, host.clientWidth || 800);
  const visible = state.table.bodyparts.filter((b) => !state.hidden.has(b));
  if (!visible.length) {
    host.replaceChildren(element("p", { class: "hint", text: "every body part is hidden" }));
    state.plots = [];
    return;
  }
  const [first, stop] = state.range;
  const answer = await api(`/api/review/traces?${query({ p: state.project, file: state.file, start: first, stop, max_points: 2 * Math.round(width), series: series.join(","), bodyparts: visible.join(",") })}`);
  state.traces = answer;
  state.plots = series.map((name) => {
    const canvas = element("canvas", { class: "trace", "data-series": name, "aria-label": `${name} trace` });
    return { series: name, canvas, data: answer.series[name] };
  });
  host.replaceChildren(...state.plots.map((plot) => element("div", { class: "trace-row" }, element("span", { class: "trace-label", text: SERIES_LABELS[plot.series] || plot.series }), plot.canvas)));
  for (const plot of state.plots) attachTrace(plot);
  drawTraces();
  $("trace-range").textContent = `frames ${answer.start}-${answer.stop - 1}${answer.decimated ? ` (${answer.n_frames} frames drawn as each bucket's lowest and highest value)` : ""}`;
  document.body.dataset.traces = `${first}-${stop}`;
}

function traceScale(plot) {
  let low = Infinity;
  let high = -Infinity;
  for (const trace of Object.values(plot.data)) {
    for (const v of trace.values) {
      if (v === null) continue;
      if (v < low) low = v;
      if (v > high) high = v;
    }
  }
  if (plot.series === "likelihood") { low = 0; high = 1; }
  if (!Number.isFinite(low)) { low = 0; high = 1; }
  if (high - low < 1e-6) { high += 0.5; low -= 0.5; }
  return { low, high };
}

function drawTraces() {
  const [first, stop] = state.range;
  for (const plot of state.plots) {
    const canvas = plot.canvas;
    const g = fitCanvas(canvas);
    const width = canvas.clientWidth;
    const { low, high } = traceScale(plot);
    plot.toX = (frame) => ((frame - first + 0.5) / Math.max(1, stop - first)) * width;
    plot.toY = (v) => 4 + (1 - (v - low) / (high - low)) * (TRACE_HEIGHT - 8);
    plot.fromX = (x) => first + (x / width) * (stop - first) - 0.5;
    g.fillStyle = "#fff";
    g.fillRect(0, 0, width, TRACE_HEIGHT);
    g.fillStyle = "#667085";
    g.font = "10px system-ui, sans-serif";
    g.fillText(high.toPrecision(3), 2, 10);
    g.fillText(low.toPrecision(3), 2, TRACE_HEIGHT - 2);
    g.lineWidth = 1;
    for (const [bodypart, trace] of Object.entries(plot.data)) {
      g.strokeStyle = colourOf(bodypart);
      g.beginPath();
      let drawing = false;
      trace.frames.forEach((frame, i) => {
        const v = trace.values[i];
        if (v === null) { drawing = false; return; }
        const x = plot.toX(frame);
        const y = plot.toY(v);
        if (drawing) g.lineTo(x, y); else g.moveTo(x, y);
        drawing = true;
      });
      g.stroke();
    }
    plot.image = g.getImageData(0, 0, canvas.width, canvas.height);
  }
  renderCursor();
}

function renderCursor() {
  for (const plot of state.plots) {
    if (!plot.image) continue;
    const g = plot.canvas.getContext("2d");
    g.putImageData(plot.image, 0, 0);
    if (state.frame < state.range[0] || state.frame >= state.range[1]) continue;
    const x = plot.toX(state.frame);
    g.strokeStyle = "rgba(0,0,0,0.7)";
    g.lineWidth = 1;
    g.beginPath();
    g.moveTo(x, 0);
    g.lineTo(x, TRACE_HEIGHT);
    g.stroke();
  }
}

// the frame of the drawn point nearest the click (a spike's own frame, not its bucket's)
function pickFrame(plot, cssX, cssY) {
  let best = null;
  let distance = Infinity;
  for (const trace of Object.values(plot.data)) {
    trace.frames.forEach((frame, i) => {
      const v = trace.values[i];
      if (v === null) return;
      const dx = plot.toX(frame) - cssX;
      if (Math.abs(dx) > 12) return;
      const d = Math.hypot(dx, plot.toY(v) - cssY);
      if (d < distance) { distance = d; best = frame; }
    });
  }
  return best ?? Math.round(plot.fromX(cssX));
}

let zoomTimer = null;

function attachTrace(plot) {
  plot.canvas.addEventListener("click", (event) => show(pickFrame(plot, event.offsetX, event.offsetY)).catch((e) => say(e.message, "error")));
  plot.canvas.addEventListener("dblclick", () => {
    state.range = [state.table.first_frame, state.table.last_frame + 1];
    loadTraces().catch((e) => say(e.message, "error"));
  });
  plot.canvas.addEventListener("wheel", (event) => {
    event.preventDefault();
    const [first, stop] = state.range;
    const centre = plot.fromX(event.offsetX);
    const factor = event.deltaY < 0 ? 0.7 : 1 / 0.7;
    const whole = [state.table.first_frame, state.table.last_frame + 1];
    const span = Math.max(20, Math.min(whole[1] - whole[0], (stop - first) * factor));
    let from = Math.round(centre - (centre - first) * (span / (stop - first)));
    from = Math.max(whole[0], Math.min(whole[1] - span, from));
    state.range = [from, Math.round(from + span)];
    clearTimeout(zoomTimer);
    zoomTimer = setTimeout(() => loadTraces().catch((e) => say(e.message, "error")), 120);
  }, { passive: false });
}

// ---------------------------------------------------------------- body parts, worst frames

function renderLegend() {
  $("legend").replaceChildren(
    ...state.table.bodyparts.map((name) => element("li", { class: state.hidden.has(name) ? "hidden-part" : "", "data-bodypart": name, title: "show or hide", onclick: () => {
      if (state.hidden.has(name)) state.hidden.delete(name); else state.hidden.add(name);
      renderLegend();
      renderFrame();
      loadTraces().catch((e) => say(e.message, "error"));
    } }, element("span", { class: "swatch", style: { background: colourOf(name) } }), element("span", { text: name }))),
  );
}

async function loadWorst() {
  const list = $("worst");
  const criterion = $("criterion").value;
  if (!state.table || !criterion) { list.replaceChildren(); return; }
  const answer = await api(`/api/review/worst?${query({ p: state.project, file: state.file, criterion, n: 20, min_gap: 10 })}`);
  list.replaceChildren(
    ...answer.frames.map((w) => {
      const send = element("button", { type: "button", class: "secondary", text: "send to labeler", onclick: (event) => { event.stopPropagation(); sendToLabeler(w.frame, send); } });
      return element("li", { "data-frame": w.frame, onclick: () => show(w.frame).catch((e) => say(e.message, "error")) },
        element("span", { class: "frame-link", text: `frame ${w.frame}` }), element("span", { class: "reason", text: w.reason }), send);
    }),
  );
  list.dataset.criterion = criterion;
}

async function sendToLabeler(frame, button) {
  button.disabled = true;
  try {
    const { revision } = await api(`/api/labels?${query({ p: state.project })}`);
    const answer = await api(`/api/review/send?${query({ p: state.project })}`, { method: "POST", body: { file: state.file, video: state.video, frame, base_revision: revision } });
    const link = element("a", { href: `/label?${query({ p: state.project, image: answer.image })}`, text: answer.already_queued ? "queued already: label it" : "queued: label it", "data-image": answer.image });
    button.replaceWith(link);
    say(`frame ${frame} queued for labeling (${answer.image}), with its context frames and the model's prediction`);
  } catch (error) {
    button.disabled = false;
    say(error.message, "error");
  }
}

// ---------------------------------------------------------------- did this round help

function errorOf(evaluation, splits) {
  if (!evaluation) return null;
  let total = 0;
  let count = 0;
  for (const split of splits) {
    const entry = evaluation[split];
    if (entry && entry.mean_px !== null && entry.keypoints) { total += entry.mean_px * entry.keypoints; count += entry.keypoints; }
  }
  return count ? { px: total / count, frames: splits.reduce((n, s) => n + (evaluation[s] ? evaluation[s].frames : 0), 0) } : { px: null, frames: 0 };
}

function cell(value) {
  if (value === undefined) return element("td", { text: "" });
  if (value === null) return element("td", { class: "hint", text: "-" });
  return element("td", { text: value.px === null ? "-" : `${value.px.toFixed(2)} px (${value.frames} frames)` });
}

async function loadRounds() {
  const answer = await api(`/api/train/models?${query({ p: state.project })}`);
  const body = document.querySelector("#rounds tbody");
  if (!answer.models.length) {
    body.replaceChildren(element("tr", {}, element("td", { colspan: "5", class: "hint", text: "no model directories in the project's models/ yet" })));
    return answer.models;
  }
  body.replaceChildren(
    ...answer.models.map((m) => {
      if (m.error) return element("tr", {}, element("td", { text: m.name }), element("td", { colspan: "4", class: "hint", text: m.error }));
      const e = m.evaluation && m.evaluation.current ? m.evaluation.splits : null; // on the labels of now
      return element("tr", { "data-model": m.name, "data-evaluated": e ? "1" : "0" },
        element("td", { text: m.name }),
        element("td", { text: m.n_train === null ? "?" : String(m.n_train) }),
        e ? cell(errorOf(e, ["train"])) : element("td", { colspan: "3", class: "hint", text: "not evaluated yet" }),
        ...(e ? [cell(errorOf(e, ["val", "test"])), cell(errorOf(e, ["unused"]))] : []));
    }),
  );
  return answer.models;
}

async function evaluateAll() {
  const button = $("evaluate");
  button.disabled = true;
  try {
    const models = await loadRounds();
    for (const m of models.filter((m) => !m.error && !(m.evaluation && m.evaluation.current))) {
      button.textContent = `evaluating ${m.name}...`;
      await api(`/api/train/evaluate?${query({ p: state.project, model: m.name })}`, { method: "POST" });
      await loadRounds();
    }
  } catch (error) {
    say(error.message, "error");
  } finally {
    button.disabled = false;
    button.textContent = "evaluate every model";
  }
}

// ---------------------------------------------------------------- input

function onKey(event) {
  if (event.target.closest("input, textarea, select, button")) {
    if (event.key !== " " || !event.target.closest("button")) return;
  }
  const step = event.shiftKey ? 10 : 1;
  if (event.key === " ") play().catch((e) => say(e.message, "error"));
  else if (event.key === "ArrowLeft" || event.key === "ArrowRight") {
    state.playing = false;
    show(state.frame + (event.key === "ArrowLeft" ? -step : step)).catch((e) => say(e.message, "error"));
  }
  else return;
  event.preventDefault();
}

function attach() {
  window.addEventListener("keydown", onKey);
  window.addEventListener("resize", () => { renderFrame(); drawTraces(); });
  $("play").addEventListener("click", () => play().catch((e) => say(e.message, "error")));
  $("back").addEventListener("click", () => show(state.frame - 1).catch((e) => say(e.message, "error")));
  $("forward").addEventListener("click", () => show(state.frame + 1).catch((e) => say(e.message, "error")));
  $("slider").addEventListener("input", (event) => show(Number(event.target.value)).catch((e) => say(e.message, "error")));
  $("video").addEventListener("change", (event) => { params.delete("file"); params.set("frame", "0"); loadVideo(event.target.value).catch((e) => say(e.message, "error")); });
  $("source").addEventListener("change", (event) => loadFile(event.target.value).then(() => show(state.frame)).catch((e) => say(e.message, "error")));
  $("criterion").addEventListener("change", () => loadWorst().catch((e) => say(e.message, "error")));
  $("evaluate").addEventListener("click", evaluateAll);
}

async function main() {
  if (!state.project) throw new Error("no project: open the review from a project's page");
  const project = await api(`/api/project?${query({ p: state.project })}`);
  state.bodyparts = project.bodyparts;
  state.skeleton = project.skeleton;
  state.videos = project.videos.filter((v) => !v.error).map((v) => v.name);
  $("video").replaceChildren(...state.videos.map((name) => element("option", { value: name, text: name })));
  attach();
  loadRounds().catch((e) => say(e.message, "error"));
  if (!state.videos.length) {
    say("the project has no videos to review");
    return;
  }
  const video = state.videos.includes(params.get("video")) ? params.get("video") : state.videos[0];
  $("video").value = video;
  await loadVideo(video);
}

window.elpReview = { state, show };
start(main);
