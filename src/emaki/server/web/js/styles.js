// Styles (A1111's styles.csv rows, through /api/styles): the Styles tab lists, creates, edits and
// deletes them; the generation form has a picker whose ticked styles go with each job (`styles`).
import { $, api, element, showError } from "./core.js";

const styles = { rows: [], editing: null };  // editing: the name of the style in the form, or null (a new one)

export async function loadStyles() {
  styles.rows = await api("/api/styles");
  renderStyleList();
  renderStylePicker();
}

function renderStyleList() {
  $("style-list").replaceChildren(...styles.rows.map((style) => {
    const item = document.createElement("li");
    const button = element("button", "style-item", style.name);
    button.type = "button";
    button.dataset.name = style.name;
    button.title = [style.prompt, style.negative_prompt && `Negative: ${style.negative_prompt}`].filter(Boolean).join("\n");
    if (style.name === styles.editing) button.setAttribute("aria-current", "true");
    button.addEventListener("click", () => editStyle(style));
    item.append(button);
    return item;
  }));
}

// The picker keeps what was ticked across reloads of the list.
function renderStylePicker() {
  const ticked = new Set(pickedStyles());
  $("style-picks").replaceChildren(...styles.rows.map((style) => {
    const label = element("label", "style-pick");
    const box = document.createElement("input");
    box.type = "checkbox";
    box.value = style.name;
    box.checked = ticked.has(style.name);
    box.addEventListener("change", countPicked);
    label.append(box, document.createTextNode(style.name));
    label.title = style.prompt;
    return label;
  }));
  $("style-empty").hidden = styles.rows.length > 0;
  countPicked();
}

function countPicked() {
  const count = pickedStyles().length;
  $("style-count").textContent = count ? `(${count} on)` : styles.rows.length ? `(${styles.rows.length})` : "";
}

export function pickedStyles() {
  return [...$("style-picks").querySelectorAll("input:checked")].map((box) => box.value);
}

// Ticks the styles an image was made with (its infotext's `Styles`); returns the names not here.
export function pickStyles(names) {
  const known = new Set(styles.rows.map((style) => style.name));
  for (const box of $("style-picks").querySelectorAll("input")) box.checked = names.includes(box.value);
  countPicked();
  return names.filter((name) => !known.has(name));
}

function editStyle(style) {
  styles.editing = style ? style.name : null;
  $("style-name").value = style ? style.name : "";
  $("style-prompt").value = style ? style.prompt : "";
  $("style-negative").value = style ? style.negative_prompt : "";
  $("style-delete").disabled = !style;
  $("style-info").textContent = style ? `Editing ${style.name}` : "A new style";
  renderStyleList();
}

async function saveStyle(event) {
  event.preventDefault();
  const name = $("style-name").value.trim();
  if (!name) {
    showError("Style name: give the style a name.");
    return;
  }
  try {
    await api(`/api/styles/${encodeURIComponent(name)}`, {
      method: "PUT", body: { prompt: $("style-prompt").value, negative_prompt: $("style-negative").value },
    });
    // Renamed in the form: the old one goes, as an edit in place would expect.
    if (styles.editing && styles.editing !== name) {
      await api(`/api/styles/${encodeURIComponent(styles.editing)}`, { method: "DELETE" });
    }
    styles.editing = name;
    await loadStyles();
    $("style-delete").disabled = false;
    $("style-info").textContent = `Saved ${name}`;
  } catch (error) {
    showError(`Style ${name}: ${error.message}`);
  }
}

async function deleteStyle() {
  const name = styles.editing;
  if (!name || !window.confirm(`Delete the style ${name}?`)) return;
  try {
    await api(`/api/styles/${encodeURIComponent(name)}`, { method: "DELETE" });
    editStyle(null);
    await loadStyles();
    $("style-info").textContent = `Deleted ${name}`;
  } catch (error) {
    showError(`Style ${name}: ${error.message}`);
  }
}

export function setUpStyles() {
  $("style-form").addEventListener("submit", saveStyle);
  $("style-new").addEventListener("click", () => editStyle(null));
  $("style-delete").addEventListener("click", deleteStyle);
}
