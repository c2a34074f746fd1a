// A project's page: its videos, its labeled frames, its skeleton, and the pages of the loop.

import { api, element, link, params, query, say, start } from "./app.js";

async function main() {
  const p = params.get("p");
  const project = await api(`/api/project?${query({ p })}`);
  if (project.error) throw new Error(project.error);
  document.getElementById("name").textContent = project.name;
  document.getElementById("summary").textContent = `${project.layout} project; body parts: ${project.bodyparts.join(", ")}${project.views.length ? `; views: ${project.views.join(", ")}` : ""}`;
  document.querySelector("#videos tbody").replaceChildren(
    ...project.videos.map((v) => element("tr", {}, element("td", { text: v.name }), element("td", { text: v.error ? v.error : String(v.n_frames) }), element("td", { text: v.fps ? v.fps.toFixed(2) : "" }), element("td", { text: v.width ? `${v.width}x${v.height}` : "" }), element("td", {}, link("select frames", "/select", { p, video: v.name }), " ", link("review", "/review", { p, video: v.name })))),
  );
  document.querySelector("#labeled tbody").replaceChildren(
    ...Object.entries(project.labeled).map(([folder, c]) => element("tr", {}, element("td", { text: folder }), element("td", { text: String(c.frames) }), element("td", { text: String(c.labeled) }))),
  );
  const form = document.getElementById("skeleton");
  form.pairs.value = project.skeleton.map((pair) => pair.join("-")).join("\n");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const pairs = form.pairs.value.split("\n").map((s) => s.trim()).filter(Boolean).map((l) => l.split("-").map((s) => s.trim()));
    try {
      await api(`/api/project/skeleton?${query({ p })}`, { method: "PUT", body: { skeleton: pairs } });
      say("skeleton saved");
    } catch (error) {
      say(error.message, "error");
    }
  });
}

start(main);
