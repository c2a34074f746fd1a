// The select page: suggestions of frames to label, checked and queued for the labeler.

import { api, element, link, params, query, say, start } from "./app.js";

const p = params.get("p");
let current = null; // {video, suggestions}

async function showSources(video) {
  const box = document.getElementById("files");
  if (!video) return;
  const { files } = await api(`/api/review/sources?${query({ p, video })}`);
  if (!files.length) {
    box.replaceChildren(element("span", { text: "no prediction file about this video yet: predict it on the review page, or use k-means" }));
    return;
  }
  // a pipeline row's file (f.table) is listed even where the app may not read it (outside its roots)
  const label = (f) => (f.table ? `${f.table} ${f.model}: ${f.location || `${f.stored}, ${f.state}`}` : f.file);
  box.replaceChildren(
    ...files.map((f) =>
      element("label", {}, element("input", { type: f.kind === "predictions" ? "checkbox" : "radio", name: f.kind, value: f.file, "data-kind": f.kind, disabled: Boolean(f.table) && f.state !== "readable" }), ` ${label(f)} (${f.kind})`),
    ),
  );
}

function sources() {
  const picked = [...document.querySelectorAll("#files input:checked")];
  const body = {};
  const predictions = picked.filter((i) => i.dataset.kind === "predictions").map((i) => i.value);
  if (predictions.length === 1) body.predictions = predictions[0];
  else if (predictions.length > 1) body.members = predictions; // several models' predictions: an ensemble
  for (const kind of ["eks", "diagnostics"]) {
    const one = picked.find((i) => i.dataset.kind === kind);
    if (one) body[kind] = one.value;
  }
  return body;
}

function showSuggestions(video, suggestions) {
  current = { video, suggestions };
  document.querySelector("#suggestions tbody").replaceChildren(
    ...suggestions.map((s) =>
      element("tr", { "data-frame": String(s.frame) }, element("td", {}, element("input", { type: "checkbox", checked: true, value: String(s.frame) })), element("td", { text: String(s.frame) }), element("td", {}, element("img", { src: `/api/frame?${query({ p, video, frame: s.frame, width: 160 })}`, alt: `frame ${s.frame}`, loading: "lazy" })), element("td", { text: s.reason })),
    ),
  );
  document.getElementById("queue").disabled = !suggestions.length;
  document.body.dataset.suggested = String(suggestions.length);
}

async function main() {
  const project = await api(`/api/project?${query({ p })}`);
  const form = document.getElementById("select");
  form.video.replaceChildren(...project.videos.filter((v) => !v.error).map((v) => element("option", { value: v.name, text: `${v.name} (${v.n_frames} frames)` })));
  if (params.get("video")) form.video.value = params.get("video");
  form.addEventListener("change", (event) => {
    if (event.target.name === "method") document.getElementById("sources").hidden = form.method.value !== "model";
    if (event.target.name === "video" || event.target.name === "method") showSources(form.video.value).catch((e) => say(e.message, "error"));
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = { video: form.video.value, method: form.method.value, n: Number(form.n.value), seed: Number(form.seed.value), ...(form.method.value === "model" ? sources() : {}) };
    try {
      document.body.dataset.suggested = "";
      const answer = await api(`/api/select?${query({ p })}`, { method: "POST", body });
      showSuggestions(answer.video, answer.suggestions);
      if (answer.excluded) say(`${answer.excluded} frames of this video are queued already: not suggested again`);
    } catch (error) {
      say(error.message, "error");
    }
  });
  document.getElementById("all").addEventListener("change", (event) => {
    for (const box of document.querySelectorAll("#suggestions tbody input")) box.checked = event.target.checked;
  });
  document.getElementById("queue").addEventListener("click", async () => {
    const frames = [...document.querySelectorAll("#suggestions tbody input:checked")].map((b) => Number(b.value));
    if (!frames.length) return say("check the frames to queue first");
    try {
      const { revision } = await api(`/api/labels?${query({ p })}`);
      const answer = await api(`/api/select/queue?${query({ p })}`, { method: "POST", body: { video: current.video, frames, base_revision: revision } });
      const first = Object.values(answer.images)[0][0];
      document.getElementById("queued").replaceChildren(`${frames.length} frames queued: `, link("label them", "/label", { p, image: first }));
      document.body.dataset.queued = String(frames.length);
    } catch (error) {
      say(error.message, "error");
    }
  });
}

start(main);
