// The training page: presets with the engine's advice, parameters checked per field, a job
// followed epoch by epoch (losses and validation error drawn on a canvas), cancel and resume, the models.
//
// With a database, a round can instead be registered for a worker (VideoSet, parameters,
// TrainingTask) and the project's registered rounds are listed.
//
// State for tests and scripts is on <body>: data-job-state (running, finished, failed,
// cancelled, abandoned), data-job-epochs (epochs reported), data-models-evaluated (models whose
// evaluation is shown).

import { api, element, params, query, say, start } from "./app.js";

const FIELDS = ["backbone", "image_resize", "max_epochs", "max_time_s", "model_type", "seed"];
const POLL_MS = 1000;
const EPOCH_ROWS = 10; // the table shows the latest epochs; the plot shows them all
const COLOURS = { train_loss: "#2458c5", val_loss: "#e6194b", val_pixel_error: "#067647" };

const state = { project: params.get("p"), presets: [], job: null, timer: null, checking: null };
const form = () => document.getElementById("params");

// ---------------------------------------------------------------- parameters

function body() {
  const f = form();
  const fields = Object.fromEntries(FIELDS.map((name) => [name, f.elements[name].value]));
  return { name: f.elements.name.value.trim(), replace: f.elements.replace.checked, preset: f.elements.preset.value, fields, extra: f.elements.extra.value };
}

function showErrors(fields) {
  for (const span of document.querySelectorAll(".field-error")) {
    const problem = fields[span.dataset.for];
    span.textContent = problem || "";
    span.closest("label")?.classList.toggle("invalid", Boolean(problem));
  }
}

function showAdvice(advice, problem) {
  const box = document.getElementById("advice");
  box.textContent = advice ? advice.summary : `no advice: ${problem}`;
  box.classList.toggle("error", !advice);
}

// the advice follows the parameters (network input, backbone): so does the preset it recommends
function markRecommended(name) {
  for (const option of form().elements.preset.options) option.textContent = option.value === name ? `${option.value} (recommended)` : option.value;
}

function describePreset() {
  const preset = state.presets.find((p) => p.name === form().elements.preset.value);
  if (!preset) return;
  const sets = Object.entries(preset.params).map(([k, v]) => `${k}=${JSON.stringify(v)}`);
  document.getElementById("preset-description").textContent = preset.description + (sets.length ? ` (sets ${sets.join(", ")})` : "");
  const resize = preset.params["data.image_resize"];
  if (resize) form().elements.image_resize.value = resize.join("x");
}

async function check() {
  const answer = await api(`/api/train/validate?${query({ p: state.project })}`, { method: "POST", body: body() });
  showErrors(answer.fields);
  if (answer.advice || answer.advice_error) showAdvice(answer.advice, answer.advice_error);
  if (answer.advice) markRecommended(answer.advice.preset);
  return answer.ok;
}

function checkSoon() {
  clearTimeout(state.checking);
  state.checking = setTimeout(() => check().catch((error) => say(error.message, "error")), 300);
}

async function submit(event) {
  event.preventDefault();
  const throughPipeline = form().elements.where.value === "pipeline";
  try {
    const route = throughPipeline ? "/api/train/pipeline" : "/api/train/start";
    const response = await fetch(`${route}?${query({ p: state.project })}`, {
      method: "POST",
      headers: { "X-ELP-Request": "1", "Content-Type": "application/json" },
      credentials: "same-origin",
      body: JSON.stringify(body()),
    });
    const answer = await response.json();
    if (!response.ok) {
      showErrors(answer.fields || {});
      say(answer.error, "error");
      return;
    }
    showErrors({});
    if (throughPipeline) {
      const made = answer.new_video_set ? "a new VideoSet" : "the VideoSet";
      say(`registered: ${made} ${answer.video_set_id}, parameters ${answer.paramset_idx}, training ${answer.training_id}; a worker must run: ${answer.worker}`);
      await showTasks();
      return;
    }
    say(`training ${answer.name} started`);
    showJob(answer);
    poll();
  } catch (error) {
    say(error.message, "error");
  }
}

// ---------------------------------------------------------------- the job

const fixed = (value, digits) => (value === null || value === undefined ? "" : Number(value).toFixed(digits));

function showJob(job) {
  state.job = job;
  document.body.dataset.jobState = job.state;
  document.body.dataset.jobEpochs = String(job.epochs.length);
  document.getElementById("job-name").textContent = job.model;
  const last = job.epochs[job.epochs.length - 1];
  const stage = job.stage ? ` (stage ${job.stage})` : "";
  const parts = [`${job.state}${stage}`, `${job.epochs.length} epoch(s)`, `${job.elapsed_s.toFixed(0)} s`];
  if (last && last.val_pixel_error !== null) parts.push(`validation error ${last.val_pixel_error.toFixed(2)} px`);
  if (job.error) parts.push(job.error);
  if (job.resumable) parts.push("its finished epochs are kept: resume goes on from them");
  const line = document.getElementById("job-state");
  line.textContent = parts.join(" - ");
  line.className = `job-state ${job.state}`;
  document.getElementById("cancel").disabled = !job.running;
  document.getElementById("resume").disabled = !job.resumable;
  document.querySelector("#epochs tbody").replaceChildren(
    ...job.epochs.slice(-EPOCH_ROWS).reverse().map((e) => element("tr", {}, element("td", { text: String(e.epoch) }), element("td", { text: fixed(e.train_loss, 5) }), element("td", { text: fixed(e.val_loss, 5) }), element("td", { text: fixed(e.val_pixel_error, 2) }), element("td", { text: fixed(e.elapsed_s, 1) }))),
  );
  document.getElementById("log").textContent = job.log_tail.join("\n");
  drawCurves(job.epochs);
}

function poll() {
  clearTimeout(state.timer);
  state.timer = setTimeout(async () => {
    if (!state.job) return;
    try {
      const job = await api(`/api/train/job?${query({ p: state.project, name: state.job.name })}`);
      // a reply about the job's earlier run, sent before a resume the page has shown since
      if (state.job && job.started_at < state.job.started_at) return;
      showJob(job);
      if (job.running) poll();
      else {
        say(`training ${job.name}: ${job.state}`, job.state === "failed" ? "error" : "note");
        await showModels();
      }
    } catch (error) {
      say(error.message, "error");
    }
  }, POLL_MS);
}

// cancel or resume the job shown, then follow it
async function act(action) {
  if (!state.job) return;
  try {
    showJob(await api(`/api/train/${action}?${query({ p: state.project, name: state.job.name })}`, { method: "POST" }));
    poll();
  } catch (error) {
    say(error.message, "error");
  }
}

// Two panels: the losses (log scale, train and validation) and the validation error in pixels.
function drawCurves(epochs) {
  const canvas = document.getElementById("curves");
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || 560;
  const height = canvas.clientHeight || 240;
  canvas.width = width * ratio;
  canvas.height = height * ratio;
  const g = canvas.getContext("2d");
  g.setTransform(ratio, 0, 0, ratio, 0, 0);
  g.clearRect(0, 0, width, height);
  g.font = "11px system-ui, sans-serif";
  const half = width / 2;
  panel(g, { x: 0, y: 0, w: half, h: height }, epochs, ["train_loss", "val_loss"], "loss (log)", true);
  panel(g, { x: half, y: 0, w: half, h: height }, epochs, ["val_pixel_error"], "validation error (px)", false);
}

function panel(g, box, epochs, keys, title, logScale) {
  const pad = { l: 44, r: 10, t: 18, b: 22 };
  const plot = { x: box.x + pad.l, y: box.y + pad.t, w: box.w - pad.l - pad.r, h: box.h - pad.t - pad.b };
  g.fillStyle = "#1d2330";
  g.fillText(title, plot.x, box.y + 12);
  g.strokeStyle = "#d0d5dd";
  g.strokeRect(plot.x, plot.y, plot.w, plot.h);
  const f = logScale ? (v) => Math.log10(v) : (v) => v;
  const values = epochs.flatMap((e) => keys.map((k) => e[k])).filter((v) => v !== null && v !== undefined && (!logScale || v > 0));
  if (!values.length) {
    g.fillStyle = "#667085";
    g.fillText("no epoch yet", plot.x + 8, plot.y + plot.h / 2);
    return;
  }
  let lo = Math.min(...values.map(f));
  let hi = Math.max(...values.map(f));
  if (hi - lo < 1e-9) { lo -= 0.5; hi += 0.5; }
  const first = epochs[0].epoch;
  const span = Math.max(1, epochs[epochs.length - 1].epoch - first);
  const px = (epoch) => plot.x + ((epoch - first) / span) * plot.w;
  const py = (v) => plot.y + plot.h - ((f(v) - lo) / (hi - lo)) * plot.h;
  g.fillStyle = "#667085";
  for (const t of [lo, (lo + hi) / 2, hi]) {
    const value = logScale ? 10 ** t : t;
    const text = Math.abs(value) >= 100 || value === 0 ? value.toFixed(0) : value.toPrecision(2);
    g.fillText(text, box.x + 4, plot.y + plot.h - ((t - lo) / (hi - lo)) * plot.h + 4);
  }
  g.fillText(`epoch ${first}`, plot.x, plot.y + plot.h + 14);
  const lastText = `${epochs[epochs.length - 1].epoch}`;
  g.fillText(lastText, plot.x + plot.w - g.measureText(lastText).width, plot.y + plot.h + 14);
  keys.forEach((key, i) => {
    g.strokeStyle = g.fillStyle = COLOURS[key];
    g.lineWidth = 1.5;
    g.beginPath();
    let drawing = false;
    for (const e of epochs) {
      const v = e[key];
      if (v === null || v === undefined || (logScale && v <= 0)) { drawing = false; continue; }
      if (drawing) g.lineTo(px(e.epoch), py(v));
      else g.moveTo(px(e.epoch), py(v));
      drawing = true;
      if (epochs.length === 1) g.fillRect(px(e.epoch) - 2, py(v) - 2, 4, 4);
    }
    g.stroke();
    const label = key.replace("_", " ").replace("_", " ");
    g.fillText(label, plot.x + plot.w - 110, plot.y + 14 + 13 * i);
  });
}

// ---------------------------------------------------------------- the models

function errorCell(evaluation, split) {
  if (!evaluation) return element("td", { class: "hint", text: "..." });
  const s = evaluation.splits[split];
  if (!s || !s.frames) return element("td", { class: "hint", text: "-" });
  return element("td", { title: `${s.frames} frames, ${s.keypoints} keypoints`, text: `${s.mean_px.toFixed(1)} / ${s.median_px.toFixed(1)} / ${s.p95_px.toFixed(1)} (${s.frames})` });
}

function modelRow(model) {
  const ev = model.evaluation && model.evaluation.current ? model.evaluation : null;
  const trained = new Date(model.trained_at * 1000).toLocaleString();
  const network = model.error ? model.error : `${model.backbone || ""} ${model.model_type || ""} ${model.image_resize ? model.image_resize.join("x") : ""}${model.kind && model.kind !== "single_stage" ? ` (${model.kind})` : ""}`;
  const row = element(
    "tr",
    { "data-model": model.name, "data-evaluated": ev ? "1" : "0" },
    element("td", { text: model.name }),
    element("td", { text: trained }),
    element("td", { class: model.error ? "error" : "", text: network }),
    element("td", { text: `${model.n_train ?? "?"} / ${model.n_val ?? "?"}` }),
    element("td", { text: String(model.epochs ?? "") }),
    ...["train", "val", "test", "unused"].map((split) => (model.kind === "per_view" || model.error ? element("td", { class: "hint", text: "-" }) : errorCell(ev, split))),
  );
  return row;
}

async function showModels() {
  const { models } = await api(`/api/train/models?${query({ p: state.project })}`);
  const tbody = document.querySelector("#models tbody");
  const rows = models.map(modelRow);
  tbody.replaceChildren(...rows);
  if (!models.length) tbody.append(element("tr", {}, element("td", { colspan: "9", text: "no model in this project's models/ yet" })));
  countEvaluated();
  // evaluations missing or made on other labels: computed one model at a time (each runs the network)
  for (const [i, model] of models.entries()) {
    if (model.error || model.kind === "per_view" || (model.evaluation && model.evaluation.current)) continue;
    try {
      const { evaluation } = await api(`/api/train/evaluate?${query({ p: state.project, model: model.name })}`, { method: "POST" });
      const row = modelRow({ ...model, evaluation });
      rows[i].replaceWith(row);
      rows[i] = row;
      countEvaluated();
    } catch (error) {
      say(`${model.name}: ${error.message}`, "error");
    }
  }
}

function countEvaluated() {
  document.body.dataset.modelsEvaluated = String(document.querySelectorAll('#models tr[data-evaluated="1"]').length);
}

// ---------------------------------------------------------------- the pipeline (with a database)

async function showTasks() {
  const problem = document.getElementById("pipeline-error");
  try {
    const { tasks } = await api(`/api/train/pipeline?${query({ p: state.project })}`);
    problem.hidden = true;
    const tbody = document.querySelector("#tasks tbody");
    tbody.replaceChildren(
      ...tasks.map((t) => element("tr", { "data-task": `${t.video_set_id}-${t.paramset_idx}-${t.training_id}` }, element("td", { text: String(t.video_set_id) }), element("td", { text: String(t.n_labeled_frames ?? "") }), element("td", { text: String(t.paramset_idx) }), element("td", { text: String(t.training_id) }), element("td", { text: t.name }), element("td", { class: t.state === "failed" ? "error" : "", title: t.error || "", text: t.state }), element("td", { text: t.epochs === null ? "" : String(t.epochs) }), element("td", { text: t.model_dir || "" }))),
    );
    if (!tasks.length) tbody.append(element("tr", {}, element("td", { colspan: "8", text: "no round of this project registered yet" })));
  } catch (error) {
    problem.textContent = error.message;
    problem.hidden = false;
  }
}

// ---------------------------------------------------------------- start

async function main() {
  const setup = await api(`/api/train/presets?${query({ p: state.project })}`);
  state.presets = setup.presets;
  const f = form();
  f.elements.preset.replaceChildren(...setup.presets.map((p) => element("option", { value: p.name, text: p.recommended ? `${p.name} (recommended)` : p.name })));
  f.elements.backbone.replaceChildren(...setup.choices.backbone.map((b) => element("option", { value: b, text: b })));
  f.elements.model_type.replaceChildren(...setup.choices.model_type.map((m) => element("option", { value: m, text: m })));
  for (const name of FIELDS) f.elements[name].value = setup.defaults[name] ?? "";
  f.elements.name.value = setup.suggested_name;
  const recommended = setup.presets.find((p) => p.recommended);
  if (recommended) f.elements.preset.value = recommended.name;
  describePreset();
  showAdvice(setup.advice, setup.advice_error);
  f.elements.preset.addEventListener("change", () => { describePreset(); checkSoon(); });
  f.addEventListener("input", (event) => { if (event.target.name !== "preset" && event.target.name !== "where") checkSoon(); });
  f.addEventListener("change", (event) => {
    if (event.target.name === "where") document.getElementById("start").textContent = f.elements.where.value === "pipeline" ? "register for a worker" : "start training";
  });
  f.addEventListener("submit", submit);
  document.getElementById("cancel").addEventListener("click", () => act("cancel"));
  document.getElementById("resume").addEventListener("click", () => act("resume"));
  if (setup.pipeline.configured) {
    document.getElementById("where").hidden = false;
    document.getElementById("pipeline").hidden = false;
    document.getElementById("worker-command").textContent = setup.pipeline.worker;
    showTasks();
  }
  drawCurves([]);
  const { jobs } = await api(`/api/train/jobs?${query({ p: state.project })}`);
  if (jobs.length) {
    showJob(jobs[0]);
    if (jobs[0].running) poll();
  }
  await showModels();
}

start(main);
