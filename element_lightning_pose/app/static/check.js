// The label check page: the flags of the project's labels, each a link to its frame.

import { api, element, link, params, query, say, start } from "./app.js";

async function check(model) {
  const p = params.get("p");
  const report = await api(`/api/checks?${query({ p, model: model || undefined })}`);
  document.getElementById("notes").replaceChildren(...report.notes.map((n) => element("li", { text: n })));
  const body = document.querySelector("#flags tbody");
  body.replaceChildren(
    ...report.flags.map((f) =>
      element("tr", { "data-kind": f.kind }, element("td", { text: f.kind.replaceAll("_", " ") }), element("td", {}, link(f.image, "/label", { p, image: f.image })), element("td", { text: f.view || "" }), element("td", { text: f.bodyparts.join(", ") }), element("td", { text: f.score.toFixed(1) }), element("td", { text: f.message })),
    ),
  );
  if (!report.flags.length) body.append(element("tr", {}, element("td", { colspan: "6", text: "no label looks wrong" })));
  document.body.dataset.checked = String(report.flags.length);
}

async function main() {
  const p = params.get("p");
  const form = document.getElementById("options");
  try {
    const { models } = await api(`/api/train/models?${query({ p })}`);
    form.model.append(...models.filter((m) => !m.error).map((m) => element("option", { value: `models/${m.name}`, text: m.name })));
  } catch {
    // no model list on this server: the check runs without a model
  }
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    check(form.model.value).catch((e) => say(e.message, "error"));
  });
  await check("");
}

start(main);
