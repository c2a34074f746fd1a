// The projects page: the projects under the app's folders, and a form for a new one.

import { api, element, link, say, start } from "./app.js";

const chosen = new Set();

async function showProjects() {
  const { projects } = await api("/api/projects");
  const body = document.querySelector("#projects tbody");
  body.replaceChildren(
    ...projects.map((p) => {
      const labeled = Object.values(p.labeled).reduce((n, c) => n + c.labeled, 0);
      return element("tr", {}, element("td", {}, link(p.name, "/project", { p: p.key })), element("td", { text: p.error ? `unreadable: ${p.error}` : p.layout }), element("td", { text: p.bodyparts.join(", ") }), element("td", { text: String(labeled) }));
    }),
  );
  if (!projects.length) body.append(element("tr", {}, element("td", { colspan: "4", text: "no project yet under these folders" })));
}

async function browse(key) {
  const { entries } = await api(`/api/files?p=${encodeURIComponent(key)}`);
  const box = document.getElementById("browser");
  box.replaceChildren(
    element("div", { class: "hint", text: `in ${key}` }),
    ...entries.map((e) => element("div", { class: "browser-entry", "data-key": e.key, text: e.folder ? `${e.name}/` : e.name, onclick: () => (e.folder ? browse(e.key) : choose(e.key)) })),
  );
}

function choose(key) {
  chosen.add(key);
  document.getElementById("chosen").replaceChildren(...[...chosen].map((k) => element("li", { text: k })));
}

async function main() {
  const { roots } = await api("/api/roots");
  document.getElementById("parent").replaceChildren(...roots.map((r) => element("option", { value: `${r.index}:`, text: r.path })));
  await Promise.all([showProjects(), browse(`${roots[0].index}:`)]);
  document.getElementById("create").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = new FormData(event.target);
    const lines = (name) => String(form.get(name) || "").split("\n").map((s) => s.trim()).filter(Boolean);
    try {
      const project = await api("/api/projects", {
        method: "POST",
        body: { parent: form.get("parent"), name: form.get("name"), bodyparts: lines("bodyparts"), skeleton: lines("skeleton").map((l) => l.split("-").map((s) => s.trim())), views: lines("views"), videos: [...chosen] },
      });
      window.location.href = `/project?p=${encodeURIComponent(project.key)}`;
    } catch (error) {
      say(error.message, "error");
    }
  });
}

start(main);
