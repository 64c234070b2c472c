// The Merge tab: A1111's checkpoint merger on /api/merge (two or three checkpoints, α or 25 UNet
// block weights, LoRAs baked in), queued as a job and watched like the others (server-sent events,
// or polling with credentials); the new checkpoint joins the model lists when it is done, and its
// recipe is shown.
import {
  $, api, cancelJob, clearError, element, fillSelect, showError, stopWatching, watchPanelJob,
} from "./core.js";

const merge = { job: null, events: null, loras: [], onDone: () => {} };
const BLOCKS = 25;  // IN00-IN11, M00, OUT00-OUT11 (emaki.merge.blocks.UNET_BLOCKS)
// The presets' weights, in that order; "none" empties the field (α everywhere).
const BLOCK_PRESETS = {
  none: [],
  "all-a": Array(BLOCKS).fill(0),
  "all-b": Array(BLOCKS).fill(1),
  "input-b": [...Array(12).fill(1), ...Array(13).fill(0)],
  "output-b": [...Array(13).fill(0), ...Array(12).fill(1)],
};

// The checkpoints (A and B required, C optional) and the LoRAs the rows can pick.
export async function loadMergeChoices() {
  try {
    const [models, loras] = await Promise.all([api("/api/models"), api("/api/loras")]);
    const names = models.checkpoints.map((c) => [c.name, c.title]);
    for (const [id, optional] of [["merge-a", false], ["merge-b", true], ["merge-c", true]]) {
      const select = $(id);
      const kept = select.value;
      fillSelect(select, optional ? [["", "None"], ...names] : names);
      if ([...select.options].some((o) => o.value === kept)) select.value = kept;
    }
    merge.loras = loras.map((l) => l.name);
    for (const select of document.querySelectorAll(".merge-lora select")) {
      const kept = select.value;
      fillSelect(select, merge.loras.map((n) => [n, n]));
      select.value = kept;
    }
    $("merge-add-lora").disabled = merge.loras.length === 0;
  } catch (error) {
    showError(`Merge: ${error.message}`);
  }
}

function addLoraRow() {
  const row = element("div", "merge-lora");
  const pick = document.createElement("select");
  pick.className = "merge-lora-name";
  fillSelect(pick, merge.loras.map((n) => [n, n]));
  const number = (className, label) => {
    const wrap = element("label", "", label);
    const input = document.createElement("input");
    Object.assign(input, { type: "number", className, min: "-10", max: "10", step: "0.05", value: "1" });
    wrap.append(input);
    return wrap;
  };
  const name = element("label", "", "LoRA");
  name.append(pick);
  const remove = element("button", "", "Remove");
  remove.type = "button";
  remove.addEventListener("click", () => row.remove());
  row.append(name, number("merge-lora-te", "Text encoder"), number("merge-lora-unet", "UNet"), remove);
  $("merge-loras").append(row);
}

// The block weights field as numbers (split as `--blocks` is: commas or spaces), or null when
// empty; how many there are is the server's to check (its message names the field).
function readBlocks() {
  const parts = $("merge-blocks").value.split(/[\s,]+/).filter(Boolean);
  if (!parts.length) return null;
  const bad = parts.find((part) => !Number.isFinite(Number(part)));
  if (bad !== undefined) throw new Error(`blocks: ${JSON.stringify(bad)} is not a number (expected ${BLOCKS} numbers)`);
  return parts.map(Number);
}

function showBlockCount() {
  const count = $("merge-blocks").value.split(/[\s,]+/).filter(Boolean).length;
  $("merge-blocks-info").textContent = count ? `${count} of ${BLOCKS} weights` : "";
}

function fillBlocksPreset() {
  const weights = BLOCK_PRESETS[$("merge-blocks-preset").value];
  if (!weights) return;
  $("merge-blocks").value = weights.join(",");
  showBlockCount();
}

// The form as /api/merge's body; a mistake the page can see is thrown as an Error.
function readMergeForm() {
  const models = ["merge-a", "merge-b", "merge-c"].map((id) => $(id).value).filter(Boolean);
  const output = $("merge-output").value.trim();
  if (!output) throw new Error("Output file: give the new checkpoint a file name, e.g. mix.safetensors.");
  const loras = [...document.querySelectorAll(".merge-lora")].map((row) => ({
    name: row.querySelector(".merge-lora-name").value,
    te: Number(row.querySelector(".merge-lora-te").value),
    unet: Number(row.querySelector(".merge-lora-unet").value),
  }));
  const alpha = $("merge-alpha").value.trim();
  const body = { models, loras, output, overwrite: $("merge-overwrite").checked, alpha: alpha === "" ? 0.3 : Number(alpha) };
  if ($("merge-mode").value) body.mode = $("merge-mode").value;
  const blocks = readBlocks();
  if (blocks) body.blocks = blocks;
  return body;
}

async function startMerge() {
  clearError();
  $("merge-blocks-error").textContent = "";
  let job;
  try {
    job = await api("/api/merge", { method: "POST", body: readMergeForm() });
  } catch (error) {
    // The page's and the server's messages name their field first: "blocks: ...".
    if (/^blocks\b/.test(error.message)) $("merge-blocks-error").textContent = error.message;
    showError(`Merge not started: ${error.message}`);
    return;
  }
  $("merge-recipe").hidden = true;
  watchPanelJob("merge", merge, job, { doing: "Merging", what: "merge", counter: "mergeEvents", finished: finishMerge });
}

function finishMerge(job) {
  stopWatching(merge);
  $("merge-start").disabled = false;
  $("merge-cancel").disabled = true;
  if (!job) return;
  window.emaki.mergesFinished += 1;
  if (job.status === "done") {
    $("merge-progress").value = 1;
    $("merge-status").textContent = `Done: ${job.result?.filename ?? job.result?.name ?? "saved"}`;
    if (job.result?.recipe) {
      // What was merged, as written into the file's metadata (with the inputs' hashes).
      $("merge-recipe").textContent = Object.entries(job.result.recipe)
        .map(([key, value]) => `${key}: ${JSON.stringify(value)}`).join("\n");
      $("merge-recipe").hidden = false;
    }
    merge.onDone();
    loadMergeChoices();
  } else if (job.status === "failed") {
    $("merge-status").textContent = "Failed";
    showError(`Merge failed: ${job.error || "unknown error"}`);
  } else {
    $("merge-status").textContent = `Merge ${job.status}`;
  }
}

async function cancelMerge() {
  if (merge.job) await cancelJob(merge.job);
}

// `onDone`: what the page does once a new checkpoint exists (its model menus read the list again).
export function setUpMerge(onDone) {
  merge.onDone = onDone;
  $("merge-add-lora").addEventListener("click", addLoraRow);
  $("merge-start").addEventListener("click", startMerge);
  $("merge-cancel").addEventListener("click", cancelMerge);
  $("merge-blocks-preset").addEventListener("change", fillBlocksPreset);
  $("merge-blocks").addEventListener("input", () => {
    $("merge-blocks-preset").value = "";  // typed: no longer a preset
    showBlockCount();
  });
}
