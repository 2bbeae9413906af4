// Building the page: elements from tags, attributes and children. Text always goes in as
// text (never as HTML), so nothing a user typed can run as markup.

const SVG = "http://www.w3.org/2000/svg";

/** An element: h("button", { class: "x", onclick: fn }, "Send"). */
export function h(tag, attrs = {}, ...children) {
  const svg = tag.startsWith("svg:");
  const el = svg ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") el.addEventListener(name.slice(2), value);
    else if (name === "value" && !svg) el.value = value;
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replaces what `el` holds. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** Says `text` to screen readers (the page's live region). */
export function announce(text) {
  const region = document.getElementById("announce");
  if (region) {
    region.textContent = "";
    setTimeout(() => { region.textContent = text; }, 50);
  }
}

let fieldCount = 0;

/** A labelled input, with its hint tied to it as its description (not part of its name). */
export function field(label, attrs, hint) {
  const { tag = "input", options = [], ...rest } = attrs;
  const id = `field-${++fieldCount}`;
  const hintId = hint ? `${id}-hint` : null;
  const input = tag === "select"
    ? h("select", { ...rest, id, value: undefined }, options.map(([value, text]) => h("option", { value, selected: value === rest.value }, text)))
    : h(tag, { ...rest, id, "aria-describedby": hintId });
  return h("div", { class: "field" }, h("label", { for: id }, label),
    hint ? h("span", { class: "hint", id: hintId }, hint) : null, input);
}

/** A notice: kind is "error", "ok", "warn" or "" (errors are announced as alerts). */
export function notice(kind, ...text) {
  return h("p", { class: `notice ${kind}`, role: kind === "error" ? "alert" : "status" }, ...text);
}

/** Sets a form's busy state: its submit button is disabled while `work` runs. */
export async function busy(form, work) {
  const buttons = [...form.querySelectorAll("button")];
  if (buttons.some((b) => b.disabled)) return undefined;
  buttons.forEach((b) => { b.disabled = true; });
  form.setAttribute("aria-busy", "true");
  try {
    return await work();
  } finally {
    buttons.forEach((b) => { b.disabled = false; });
    form.removeAttribute("aria-busy");
  }
}

/** A date and time in the reader's locale, from RFC 3339. */
export function when(rfc3339) {
  const at = new Date(rfc3339);
  return at.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}
