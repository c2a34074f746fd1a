// The projects page's import form: pick a SLEAP file inside the roots, name the new project,
// import it (the server converts it and reads it back with the engine's reader).

import { api, element, link, say, start } from "./app.js";

let chosen = null;

async function browse(key) {
  const { entries } = await api(`/api/import/files?p=${encodeURIComponent(key)}`);
  const box = document.getElementById("sleap-browser");
  box.replaceChildren(
    element("div", { class: "hint", text: `in ${key}` }),
    ...entries.map((e) => element("div", { class: "browser-entry", "data-key": e.key, text: e.folder ? `${e.name}/` : e.name, onclick: () => (e.folder ? browse(e.key) : choose(e.key)) })),
  );
}

function choose(key) {
  chosen = key;
  document.getElementById("sleap-chosen").textContent = key;
}

async function main() {
  const { roots } = await api("/api/roots");
  document.getElementById("import-parent").replaceChildren(...roots.map((r) => element("option", { value: `${r.index}:`, text: r.path })));
  await browse(`${roots[0].index}:`);
  document.getElementById("import-sleap").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = new FormData(event.target);
    if (!chosen) {
      say("choose a SLEAP file (.slp or .pkg.slp) first", "error");
      return;
    }
    const button = event.target.querySelector("button");
    button.disabled = true;
    delete document.body.dataset.imported;
    delete document.body.dataset.importError;
    try {
      const project = await api("/api/import/sleap", { method: "POST", body: { file: chosen, parent: form.get("parent"), name: form.get("name") } });
      const frames = Object.values(project.labeled).reduce((n, c) => n + c.frames, 0);
      // the notes (frames left out, frames without context) stay on the page, under the result
      const notes = element("ul", {}, ...project.notes.map((note) => element("li", { text: note })));
      document.getElementById("sleap-chosen").replaceChildren(`imported ${frames} labeled frames into `, link(project.name, "/project", { p: project.key }), notes);
      document.body.dataset.imported = project.key;
    } catch (error) {
      say(error.message, "error");
      document.body.dataset.importError = error.message;
    } finally {
      button.disabled = false;
    }
  });
}

start(main);
