// The Settings tab: every setting of /sdapi/v1/options, built from /api/options/schema (type,
// default, A1111's section, choices), never written out by hand. A search filters by key and
// section; each type has its input (checkbox, number, select, text, JSON for lists); "Apply
// settings" sends only what changed since the settings were read, and a refusal (422) is shown
// next to the setting it names.
import { $, api, element, fillSelect, showError } from "./core.js";

const settings = {
  rendered: null,  // the promise of the schema's rows being on the page (once per page load)
  loaded: {},      // the settings as last read from the server: what "changed" is measured against
};
// Settings whose choices are the server's model listings (`/api/models`), not fixed values.
const LISTED = {
  sd_model_checkpoint: (models) => models.checkpoints.map((c) => c.title),
  sd_vae: (models) => ["Automatic", "None", ...models.vaes],
  sd_hypernetwork: (models) => ["None", ...(models.hypernetworks || [])],
};

function optionFields() {
  return [...$("settings-form").querySelectorAll("[data-option]")];
}

// The input for one setting: its id is `opt-<key>`, its type says how to read it back.
function optionInput(row) {
  let input;
  if (row.choices || LISTED[row.key]) {
    input = document.createElement("select");
    fillSelect(input, (row.choices || []).map((c) => [String(c), String(c)]));
  } else if (row.type === "list") {
    input = document.createElement("textarea");
    input.rows = 1;
    input.spellcheck = false;
  } else {
    input = document.createElement("input");
    input.type = { bool: "checkbox", int: "number", float: "number" }[row.type] || "text";
    if (row.type === "int") input.step = "1";
    if (row.type === "float") input.step = "any";
    input.autocomplete = "off";
  }
  input.id = `opt-${row.key}`;
  input.dataset.option = row.key;
  input.dataset.type = row.type;
  input.disabled = row.readonly;  // the server sets these (its folders, the checkpoint's hash)
  return input;
}

function optionRow(row) {
  const line = element("div", "option-row");
  line.dataset.search = `${row.key} ${row.section}`.toLowerCase();
  const label = element("label", "");
  label.htmlFor = `opt-${row.key}`;
  label.append(element("code", "", row.key));
  if (row.applied) label.append(element("span", "option-applied", "applied"));
  if (row.readonly) label.append(element("span", "option-readonly", "set by the server"));
  label.title = `default: ${JSON.stringify(row.default)}`;
  line.append(label, optionInput(row), element("span", "option-error"));
  return line;
}

// One block per A1111 section, in A1111's order (a section an extension adds to comes again).
function renderSettings(schema) {
  const blocks = [];
  for (const row of schema) {
    let block = blocks.at(-1);
    if (!block || block.dataset.section !== row.section) {
      block = element("section", "option-section");
      block.dataset.section = row.section;
      block.append(element("h3", "", row.section));
      blocks.push(block);
    }
    block.append(optionRow(row));
  }
  $("settings-form").replaceChildren(...blocks);
  filterSettings();
}

function filterSettings() {
  const words = $("settings-search").value.trim().toLowerCase();
  let shown = 0;
  for (const block of $("settings-form").querySelectorAll(".option-section")) {
    let any = false;
    for (const row of block.querySelectorAll(".option-row")) {
      row.hidden = Boolean(words) && !row.dataset.search.includes(words);
      if (!row.hidden) shown += 1;
      any ||= !row.hidden;
    }
    block.hidden = !any;
  }
  const total = $("settings-form").querySelectorAll(".option-row").length;
  $("settings-count").textContent = words ? `${shown} of ${total} settings` : `${total} settings`;
}

function showValue(field, value) {
  if (field.type === "checkbox") {
    field.checked = Boolean(value);
  } else if (field.dataset.type === "list") {
    field.value = JSON.stringify(value ?? []);
  } else {
    const text = value === null || value === undefined ? "" : String(value);
    if (field.tagName === "SELECT" && ![...field.options].some((o) => o.value === text)) {
      field.append(new Option(text, text));  // a value the choices do not list (kept, as A1111 keeps it)
    }
    field.value = text;
  }
}

// The field's value as the server takes it; a value the page can already tell is wrong throws.
function readValue(field) {
  const type = field.dataset.type;
  if (type === "bool") return field.checked;
  if (type === "int" || type === "float") {
    const number = field.value.trim() === "" ? NaN : Number(field.value);
    if (!Number.isFinite(number)) throw new Error("expected a number");
    return number;
  }
  if (type === "list") {
    try {
      return JSON.parse(field.value);
    } catch {
      throw new Error('not JSON: expected a list such as ["a", "b"]');
    }
  }
  if (type === "text-or-null" && field.value === "") return null;
  return field.value;  // not trimmed: some settings are a space (separators)
}

function fieldOf(key) {
  return $(`opt-${key}`);
}

function showFieldError(key, message) {
  const field = fieldOf(key);
  if (!field) return false;
  const row = field.closest(".option-row");
  row.querySelector(".option-error").textContent = message;
  row.hidden = false;  // even when the search hides it
  row.closest(".option-section").hidden = false;
  field.scrollIntoView({ block: "nearest" });
  return true;
}

function clearFieldErrors() {
  for (const error of $("settings-form").querySelectorAll(".option-error")) error.textContent = "";
}

// Every setting's row (once), the listings' names as choices, and the server's current values.
export async function loadSettings() {
  try {
    settings.rendered ??= api("/api/options/schema").then(renderSettings).catch((error) => {
      settings.rendered = null;  // the next opening of the tab tries again
      throw error;
    });
    const [options, models] = await Promise.all([api("/sdapi/v1/options"), api("/api/models"), settings.rendered]);
    for (const [key, names] of Object.entries(LISTED)) {
      if (fieldOf(key)) fillSelect(fieldOf(key), names(models).map((n) => [n, n]));
    }
    for (const field of optionFields()) showValue(field, options[field.dataset.option]);
    settings.loaded = options;
    clearFieldErrors();
    $("settings-info").textContent = "";
  } catch (error) {
    showError(`Settings: ${error.message}`);
  }
}

// The settings changed since they were read, or null when the page found a wrong one (marked).
function changedSettings() {
  const body = {};
  let wrong = false;
  for (const field of optionFields()) {
    if (field.disabled) continue;
    const key = field.dataset.option;
    try {
      const value = readValue(field);
      if (JSON.stringify(value) !== JSON.stringify(settings.loaded[key])) body[key] = value;
    } catch (error) {
      wrong = showFieldError(key, `${key}: ${error.message}`) || wrong;
    }
  }
  return wrong ? null : body;
}

async function saveSettings() {
  clearFieldErrors();
  const body = changedSettings();
  if (body === null) {
    $("settings-info").textContent = "Not saved.";
    return;
  }
  if (!Object.keys(body).length) {
    $("settings-info").textContent = "Nothing changed.";
    return;
  }
  try {
    await api("/sdapi/v1/options", { method: "POST", body });
    await loadSettings();
    $("settings-info").textContent = "Saved.";
  } catch (error) {
    // emaki's refusals start with the setting they are about: "KEY: what was expected".
    const key = /^([A-Za-z0-9_]+):/.exec(error.message)?.[1];
    if (key && key in body) showFieldError(key, error.message);
    showError(`Settings: ${error.message}`);
    $("settings-info").textContent = "Not saved.";
  }
}

export function setUpSettings() {
  $("settings-save").addEventListener("click", saveSettings);
  $("settings-reload").addEventListener("click", loadSettings);
  $("settings-search").addEventListener("input", filterSettings);
  $("settings-form").addEventListener("submit", (event) => {  // Enter in a field applies, never reloads
    event.preventDefault();
    saveSettings();
  });
}
