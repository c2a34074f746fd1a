// element-lightning-pose app: what every page shares (our own code, no framework, no build step).
// Pages are served by the app; each page's module reads its parameters from <body data-*>.

export const params = new URLSearchParams(window.location.search);

// One colour per body part (by its index in the project's list), the same on every page.
export const COLOURS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45", "#fabed4", "#469990", "#dcbeff", "#9a6324", "#800000", "#aaffc3", "#808000", "#000075", "#a9a9a9"];

// Every change carries X-ELP-Request (the server refuses changes without it: a page of another
// site cannot send it); errors arrive as {error: message} and are thrown with that message.
export async function api(path, { method = "GET", body = undefined } = {}) {
  const options = { method, headers: { "X-ELP-Request": "1" }, credentials: "same-origin" };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(path, options);
  const type = response.headers.get("content-type") || "";
  const data = type.includes("application/json") ? await response.json() : await response.text();
  if (!response.ok) {
    const error = new Error(typeof data === "object" && data.error ? data.error : `${response.status} ${response.statusText}`);
    error.status = response.status;
    throw error;
  }
  return data;
}

export function query(values) {
  return new URLSearchParams(Object.entries(values).filter(([, v]) => v !== undefined && v !== null)).toString();
}

// A message bar at the top of the page: errors stay until dismissed, notes fade.
export function say(text, kind = "note") {
  const bar = document.getElementById("messages");
  if (!bar) return;
  const item = document.createElement("div");
  item.className = `message ${kind}`;
  item.textContent = text;
  item.setAttribute("role", kind === "error" ? "alert" : "status");
  item.addEventListener("click", () => item.remove());
  bar.append(item);
  if (kind !== "error") setTimeout(() => item.remove(), 4000);
}

export function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "text") node.textContent = value;
    else if (name === "style") Object.assign(node.style, value); // CSSOM: allowed by the page's CSP, a style attribute is not
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (value !== undefined && value !== null && value !== false) node.setAttribute(name, value === true ? "" : value);
  }
  node.append(...children);
  return node;
}

export function link(text, page, values) {
  return element("a", { href: `${page}?${query(values)}`, text });
}

// Run a page's async main and show what it throws.
export function start(main) {
  window.addEventListener("DOMContentLoaded", () => {
    main().catch((error) => say(error.message, "error"));
  });
}
