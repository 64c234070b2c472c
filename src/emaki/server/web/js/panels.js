// The Models tab (what the server's folders hold, from its listing routes) and the Settings tab
// (a few of A1111's options emaki applies, read and written through /sdapi/v1/options).
import { $, api, element, fillSelect, showError } from "./core.js";

// ---------------------------------------------------------------- models

function modelList(title, rows, describe) {
  const box = element("section", "model-kind");
  box.dataset.kind = title;
  box.append(element("h3", "", `${title} (${rows.length})`));
  if (!rows.length) {
    box.append(element("p", "hint", "None in the folders."));
    return box;
  }
  const list = document.createElement("ul");
  list.append(...rows.map((row) => {
    const item = element("li", "", describe(row));
    item.dataset.name = typeof row === "string" ? row : row.name ?? row.title;
    return item;
  }));
  box.append(list);
  return box;
}

export async function loadModels() {
  try {
    const [models, loras, upscalers, embeddings, hypernetworks] = await Promise.all([
      api("/api/models"), api("/api/loras"), api("/api/upscalers"),
      api("/sdapi/v1/embeddings"), api("/sdapi/v1/hypernetworks"),
    ]);
    const loaded = Object.keys(embeddings.loaded || {});
    const skipped = Object.keys(embeddings.skipped || {});
    $("models-lists").replaceChildren(
      modelList("Checkpoints", models.checkpoints, (c) => (c.title === models.current ? `${c.title} (current)` : c.title)),
      modelList("VAEs", models.vaes, (name) => name),
      modelList("LoRAs", loras, (l) => (l.alias && l.alias !== l.name ? `${l.name} (${l.alias})` : l.name)
        + (l.base_model ? `, ${l.base_model}` : "")),
      modelList("Embeddings", [...loaded, ...skipped],
        (name) => (skipped.includes(name) ? `${name} (not for this model)` : name)),
      modelList("Hypernetworks", hypernetworks, (h) => h.name),
      modelList("Upscalers", upscalers, (u) => (u.reason ? `${u.name}: ${u.reason}`
        : u.kind === "model" ? `${u.name} (${u.architecture}, ${u.scale}x)` : u.name)),
    );
  } catch (error) {
    showError(`Models: ${error.message}`);
  }
}

// ---------------------------------------------------------------- settings

function optionFields() {
  return [...$("settings-form").querySelectorAll("[data-option]")];
}

export async function loadSettings() {
  try {
    const [options, models] = await Promise.all([api("/sdapi/v1/options"), api("/api/models")]);
    fillSelect($("opt-sd_vae"), [["Automatic", "Automatic"], ["None", "None"], ...models.vaes.map((v) => [v, v])]);
    for (const field of optionFields()) {
      const value = options[field.dataset.option];
      if (value === undefined || value === null) continue;
      if (field.tagName === "SELECT" && ![...field.options].some((o) => o.value === String(value))) {
        field.append(new Option(String(value), String(value)));  // a value this page does not list
      }
      field.value = String(value);
    }
    $("settings-info").textContent = "";
  } catch (error) {
    showError(`Settings: ${error.message}`);
  }
}

async function saveSettings() {
  const body = {};
  for (const field of optionFields()) {
    const text = field.value.trim();
    if (text === "") continue;
    body[field.dataset.option] = field.dataset.type === "int" && Number.isFinite(Number(text)) ? Number(text) : text;
  }
  try {
    await api("/sdapi/v1/options", { method: "POST", body });
    $("settings-info").textContent = "Saved.";
    await loadSettings();
    $("settings-info").textContent = "Saved.";
  } catch (error) {
    showError(`Settings: ${error.message}`);
    $("settings-info").textContent = "Not saved.";
  }
}

export function setUpPanels() {
  $("models-refresh").addEventListener("click", loadModels);
  $("settings-save").addEventListener("click", saveSettings);
  $("settings-reload").addEventListener("click", loadSettings);
}
