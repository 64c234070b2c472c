// The LoRA picker beside the prompt: the LoRAs the server lists (/api/loras), filtered as you type;
// a click puts the LoRA's tag into the prompt at its cursor.
import { $, api, showError, state } from "./core.js";

// The name a tag selects the LoRA by: its alias (kohya's `ss_output_name`), as A1111 inserts it,
// unless the alias could not stand in a tag.
function loraTagName(lora) {
  return lora.alias && !/[:<>]/.test(lora.alias) ? lora.alias : lora.name;
}

export async function loadLoras() {
  state.loras = await api("/api/loras");
  renderLoras();
}

async function refreshLoras() {
  try {
    await api("/sdapi/v1/refresh-loras", { method: "POST" });
    await loadLoras();
  } catch (error) {
    showError(`Could not list the LoRAs: ${error.message}`);
  }
}

function renderLoras() {
  const filter = $("lora-filter").value.trim().toLowerCase();
  const shown = state.loras.filter((lora) => !filter
    || [lora.name, lora.alias, ...lora.trigger_words].some((text) => text.toLowerCase().includes(filter)));
  $("lora-list").replaceChildren(...shown.map(loraButton));
  $("lora-count").textContent = state.loras.length ? `(${state.loras.length})` : "";
  $("lora-empty").hidden = state.loras.length > 0;
}

// One LoRA: its file name (and alias); hovering shows the tag, trigger words and bundled embeddings.
function loraButton(lora) {
  const tag = `<lora:${loraTagName(lora)}:1>`;
  const button = document.createElement("button");
  button.type = "button";
  button.className = "lora";
  button.dataset.name = lora.name;
  button.textContent = lora.name;
  if (lora.alias !== lora.name) {
    const alias = document.createElement("span");
    alias.className = "alias";
    alias.textContent = lora.alias;
    button.append(alias);
  }
  const lines = [`Adds ${tag} to the prompt`];
  if (lora.trigger_words.length) lines.push(`Trigger words: ${lora.trigger_words.join(", ")}`);
  if (lora.embeddings.length) lines.push(`Embeddings: ${lora.embeddings.join(", ")}`);
  if (lora.base_model) lines.push(`Base model: ${lora.base_model}`);
  button.title = lines.join("\n");
  button.addEventListener("click", () => insertIntoPrompt(tag));
  return button;
}

// Puts `text` into the prompt at its cursor (over a selection; at the end when the prompt was
// only ever filled in, which leaves the cursor there), a space apart from what is around it.
function insertIntoPrompt(text) {
  const area = $("prompt");
  const before = area.value.slice(0, area.selectionStart);
  const after = area.value.slice(area.selectionEnd);
  const head = `${before}${before && !/\s$/.test(before) ? " " : ""}${text}`;
  area.value = `${head}${after && !/^\s/.test(after) ? " " : ""}${after}`;
  area.focus();
  area.setSelectionRange(head.length, head.length);
  area.dispatchEvent(new Event("input"));  // the token counter
}

export function setUpLoras() {
  $("lora-filter").addEventListener("input", renderLoras);
  $("lora-refresh").addEventListener("click", refreshLoras);
}
