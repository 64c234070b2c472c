// The Models tab: what the server's folders hold, from its listing routes. (The Settings tab is
// settings.js.)
import { $, api, element, showError } from "./core.js";

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

export function setUpPanels() {
  $("models-refresh").addEventListener("click", loadModels);
}
