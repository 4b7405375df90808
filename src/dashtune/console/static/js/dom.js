// Building elements without innerHTML, so text from the API can never become markup.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (key === "class") {
      el.className = value;
    } else if (key === "dataset") {
      Object.assign(el.dataset, value);
    } else if (key in el && typeof value !== "string") {
      el[key] = value; // properties such as disabled, checked, multiple
    } else {
      el.setAttribute(key, value === true ? "" : value);
    }
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of [children].flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

export function replace(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

// A table from rows and [header, cell(row) => node|text, className?] columns.
export function table(rows, columns, { empty = "Nothing here yet.", rowAttrs } = {}) {
  const head = h("tr", {}, columns.map(([title, , cls]) => h("th", { class: cls }, title)));
  const body = rows.length
    ? rows.map((row) =>
        h("tr", rowAttrs ? rowAttrs(row) : {}, columns.map(([, cell, cls]) => h("td", { class: cls }, cell(row)))),
      )
    : [h("tr", {}, h("td", { class: "empty", colSpan: columns.length }, empty))];
  return h("table", { class: "table" }, h("thead", {}, head), h("tbody", {}, body));
}

export function card(title, ...children) {
  return h("section", { class: "card" }, title ? h("h2", { class: "card-title" }, title) : null, children);
}

export function errorBox(err) {
  if (!err) return null;
  return h(
    "div",
    { class: "alert alert-error", role: "alert" },
    h("strong", {}, err.code || "Error"),
    ": ",
    err.message || String(err),
  );
}

export function notice(text, kind = "info") {
  return h("div", { class: `alert alert-${kind}` }, text);
}
