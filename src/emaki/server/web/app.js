// emaki's web page, in tabs: txt2img and img2img/inpaint (one form, with a LoRA picker, styles,
// prompt-tag autocomplete and an inpainting mask painter over the init image) that queues jobs on
// /api/jobs and watches them (server-sent events, or polling when the server wants credentials),
// the X/Y/Z plot (/api/grid), a gallery with a lightbox, Extras (/api/upscale), Train (/api/train,
// with its loss curve), Styles, Merge, Batch (/api/batch), Models and Settings. Plain ES modules,
// no build step. Text from the server or from images only ever goes into the DOM through textContent.
import {
  $, api, clearError, debounce, DEBOUNCE_MS, fetchBlob, fillSelect, FINISHED, intOrNull, POLL_MS,
  readAsDataUrl, setStatus, showError, state, streamEvents,
} from "./js/core.js";
import { setUpBatch } from "./js/batch.js";
import { loadUpscalers, setUpExtras } from "./js/extras.js";
import { loadGallery, renderItems, setUpGallery } from "./js/gallery.js";
import { readInpaint, resetMask, setUpInpaint } from "./js/mask.js";
import { loadMergeChoices, setUpMerge } from "./js/merge.js";
import { loadModels, loadSettings, setUpPanels } from "./js/panels.js";
import { loadStyles, pickedStyles, pickStyles, setUpStyles } from "./js/styles.js";
import { setUpTagComplete } from "./js/tags.js";
import { loadTrainingOptions, setUpTraining } from "./js/train.js";
import { loadAxes, readGrid, setUpXyz } from "./js/xyz.js";

// ---------------------------------------------------------------- tabs

const TABS = ["txt2img", "img2img", "extras", "xyz", "train", "styles", "merge", "batch", "models", "settings"];
const TAB_KEY = "emaki.tab";
// Tabs whose lists are read from the server when they are opened (they may have changed since).
const ON_OPEN = { models: loadModels, settings: loadSettings, merge: loadMergeChoices };

function currentTab() {
  return document.body.dataset.tab || "txt2img";
}

// Shows the elements whose data-tabs names `tab` and hides the other tabs' (one page, no reload:
// the form keeps what was typed). The tab is remembered for the next visit.
function showTab(tab) {
  if (!TABS.includes(tab)) tab = "txt2img";
  document.body.dataset.tab = tab;
  for (const node of document.querySelectorAll("[data-tabs]")) node.hidden = !node.dataset.tabs.split(" ").includes(tab);
  for (const button of document.querySelectorAll("#tabs [role=tab]")) {
    const selected = button.dataset.tab === tab;
    button.setAttribute("aria-selected", String(selected));
    button.tabIndex = selected ? 0 : -1;
  }
  $("generate").textContent = tab === "xyz" ? "Generate grid" : "Generate";
  try {
    sessionStorage.setItem(TAB_KEY, tab);
  } catch {
    // not remembered: no harm
  }
  if (ON_OPEN[tab]) ON_OPEN[tab]();
}

function setUpTabs() {
  const buttons = [...document.querySelectorAll("#tabs [role=tab]")];
  for (const button of buttons) {
    button.addEventListener("click", () => showTab(button.dataset.tab));
    button.addEventListener("keydown", (event) => {  // arrow keys move along the tab list
      const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
      if (!step) return;
      const next = buttons[(buttons.indexOf(button) + step + buttons.length) % buttons.length];
      next.focus();
      showTab(next.dataset.tab);
    });
  }
  let remembered = null;
  try {
    remembered = sessionStorage.getItem(TAB_KEY);
  } catch {
    // a fresh start on txt2img
  }
  showTab(remembered || "txt2img");
}


// ---------------------------------------------------------------- token counters

// Returns a function that recounts now; typing recounts after a pause.
function tokenCounter(textarea, output, negative) {
  let latest = 0;  // only the newest answer is shown, whatever order they arrive in
  async function update() {
    const mine = ++latest;
    try {
      const count = await api("/api/tokens", { method: "POST", body: { prompt: textarea.value, negative } });
      if (mine === latest) renderTokens(output, count);
    } catch (error) {
      if (mine === latest) output.textContent = `tokens: ${error.message}`;
    }
  }
  textarea.addEventListener("input", debounce(update, DEBOUNCE_MS));
  return update;
}

function renderTokens(output, count) {
  output.replaceChildren();
  const total = document.createElement("span");
  total.className = "count";
  total.textContent = `${count.tokens}/${count.limit}`;
  total.title = count.summary;
  output.append(total);
  if (count.chunks.length > 1) {
    // Each 75-token chunk is encoded separately: show where one ends and the next starts.
    const list = document.createElement("ol");
    list.className = "chunks";
    for (const chunk of count.chunks) {
      const item = document.createElement("li");
      item.textContent = `chunk ${chunk.index + 1} (${chunk.tokens} tokens) starts at: ${chunk.text}`;
      item.title = chunk.text;
      list.append(item);
    }
    output.append(list);
  }
}

// ---------------------------------------------------------------- form

// A new checkpoint (a merge): the model menu lists it, and keeps what was chosen.
async function reloadCheckpoints() {
  const chosen = $("model").value;
  try {
    await loadChoices();
  } catch (error) {
    showError(`Could not list the models: ${error.message}`);
    return;
  }
  if ([...$("model").options].some((o) => o.value === chosen)) $("model").value = chosen;
}

async function loadChoices() {
  const [models, samplers, schedulers] = await Promise.all([
    api("/api/models"), api("/sdapi/v1/samplers"), api("/sdapi/v1/schedulers"),
  ]);
  state.checkpoints = models.checkpoints;
  state.samplers = samplers;
  state.schedulers = schedulers;
  fillSelect($("model"), models.checkpoints.map((c) => [c.title, c.title]));
  $("model").value = models.current;
  fillSelect($("vae"), [["", "Automatic"], ...models.vaes.map((name) => [name, name])]);
  fillSelect($("sampler"), samplers.map((s) => [s.name, s.name]));
  $("sampler").value = samplers.some((s) => s.name === "Euler a") ? "Euler a" : samplers[0]?.name;
  fillSelect($("scheduler"), schedulers.map((s) => [s.label, s.label]));
  $("scheduler").value = "Automatic";
}

// The form as `GenerationParams` fields; empty size fields mean the model's native size. The tab
// decides the mode, as in A1111: the init image (and mask) go only from the img2img tab.
function readForm() {
  const params = {
    prompt: $("prompt").value,
    negative_prompt: $("negative").value,
    seed: intOrNull("seed") ?? -1,
    sampler_name: $("sampler").value,
    scheduler: $("scheduler").value,
    steps: intOrNull("steps") ?? 20,
    cfg_scale: $("cfg").value.trim() === "" ? 7 : Number($("cfg").value),
    batch_size: intOrNull("batch-size") ?? 1,
    n_iter: intOrNull("batch-count") ?? 1,
  };
  for (const [field, id] of [["width", "width"], ["height", "height"]]) {
    const value = intOrNull(id);
    if (value !== null) params[field] = value;
  }
  if ($("model").value) params.model = $("model").value;
  if ($("vae").value) params.vae = $("vae").value;
  const styles = pickedStyles();
  if (styles.length) params.styles = styles;
  Object.assign(params, readSpeed());
  if (state.init && currentTab() === "img2img") {
    // img2img: the image itself travels (the server takes no paths); without one, none of these
    // fields are sent and the job is plain text to image.
    const denoise = $("denoise").value.trim();
    params.init_image = state.init;
    params.denoising_strength = denoise === "" ? 0.75 : Number(denoise);
    params.resize_mode = $("resize-mode").value;
    if ($("inpaint").checked) Object.assign(params, readInpaint());
  }
  if ($("hires").checked) {
    // Hires fix: a second, larger pass at the denoising strength; unchecked, none of it is sent.
    const denoise = $("denoise").value.trim();
    params.enable_hr = true;
    params.hr_scale = $("hr-scale").value.trim() === "" ? 2 : Number($("hr-scale").value);
    params.hr_upscaler = $("hr-upscaler").value;
    params.hr_second_pass_steps = intOrNull("hr-steps") ?? 0;
    params.denoising_strength = denoise === "" ? 0.75 : Number(denoise);
  }
  return params;
}

function numberOrNull(id) {
  const text = $(id).value.trim();
  return text === "" ? null : Number(text);
}

// The speed options (and tiling): only those switched on are sent, the rest keep the server's defaults.
function readSpeed() {
  const fields = {};
  if ($("tiling").checked) fields.tiling = true;
  for (const [field, id] of [["cache_interval", "cache-interval"], ["gate_step", "gate-step"]]) {
    const value = intOrNull(id);
    if (value) fields[field] = value;
  }
  for (const [field, id] of [["s_min_uncond", "ngms"], ["token_merging_ratio", "token-merging"]]) {
    const value = numberOrNull(id);
    if (value) fields[field] = value;
  }
  return fields;
}

function fillSpeed(params) {
  $("tiling").checked = Boolean(params.tiling);
  $("cache-interval").value = params.cache_interval ?? 0;
  $("gate-step").value = params.gate_step ?? 0;
  $("ngms").value = params.s_min_uncond ?? 0;
  $("token-merging").value = params.token_merging_ratio ?? 0;
}

const same = (a, b) => String(a).toLowerCase() === String(b).toLowerCase();

// Puts parameters (from the gallery or a PNG) back into the form. Names the page does not
// know (a sampler or model missing here) are reported instead of silently kept. `fields` are
// the infotext's own fields: the denoising strength is taken only when the image had one
// (the init image itself is never set from here).
function fillForm(params, fields = {}) {
  const unknown = [];
  $("prompt").value = params.prompt ?? "";
  $("negative").value = params.negative_prompt ?? "";
  $("seed").value = params.seed ?? -1;
  if (params.steps != null) $("steps").value = params.steps;
  if (params.cfg_scale != null) $("cfg").value = params.cfg_scale;
  $("width").value = params.width ?? "";
  $("height").value = params.height ?? "";
  if (fields["Denoising strength"] != null && params.denoising_strength != null) {
    setDenoise(params.denoising_strength);
  }
  $("hires").checked = Boolean(params.enable_hr);
  if (params.enable_hr) {
    if (params.hr_scale != null) $("hr-scale").value = params.hr_scale;
    if (params.hr_second_pass_steps != null) $("hr-steps").value = params.hr_second_pass_steps;
    if ([...$("hr-upscaler").options].some((o) => o.value === params.hr_upscaler)) {
      $("hr-upscaler").value = params.hr_upscaler;
    } else if (params.hr_upscaler) {
      unknown.push(`upscaler ${params.hr_upscaler}`);
    }
  }

  const sampler = state.samplers.find((s) => same(s.name, params.sampler_name)
    || (s.aliases || []).some((alias) => same(alias, params.sampler_name)));
  if (sampler) $("sampler").value = sampler.name;
  else if (params.sampler_name) unknown.push(`sampler ${params.sampler_name}`);

  const schedule = state.schedulers.find((s) => same(s.label, params.scheduler) || same(s.name, params.scheduler)
    || (s.aliases || []).some((alias) => same(alias, params.scheduler)));
  if (schedule) $("scheduler").value = schedule.label;
  else if (params.scheduler) unknown.push(`schedule ${params.scheduler}`);

  if (params.model) {
    const checkpoint = state.checkpoints.find((c) => [c.title, c.name, c.hash].some((n) => n && same(n, params.model)));
    if (checkpoint) $("model").value = checkpoint.title;
    else unknown.push(`model ${params.model}`);
  }
  fillSpeed(params);
  unknown.push(...pickStyles(params.styles || []).map((name) => `style ${name}`));
  recountTokens();
  return unknown;
}

let recountTokens = () => {};

// ---------------------------------------------------------------- LoRA picker

// The name a tag selects the LoRA by: its alias (kohya's `ss_output_name`), as A1111 inserts it,
// unless the alias could not stand in a tag.
function loraTagName(lora) {
  return lora.alias && !/[:<>]/.test(lora.alias) ? lora.alias : lora.name;
}

async function loadLoras() {
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

function setUpLoras() {
  $("lora-filter").addEventListener("input", renderLoras);
  $("lora-refresh").addEventListener("click", refreshLoras);
}

// ---------------------------------------------------------------- jobs

// Generate (the button, or Ctrl+Enter in any prompt box): a job on /api/jobs, or on the X/Y/Z
// tab one grid job on /api/grid.
async function generate() {
  clearError();
  if ($("generate").disabled) return;
  if (state.init && currentTab() === "img2img" && $("hires").checked) {
    showError("hires fix is for text-to-image; clear the init image");
    setStatus("Not queued");
    return;
  }
  let job;
  try {
    job = currentTab() === "xyz"
      ? await api("/api/grid", { method: "POST", body: { params: readForm(), ...readGrid() } })
      : await api("/api/jobs", { method: "POST", body: readForm() });
  } catch (error) {
    showError(error.message);
    setStatus("Not queued");
    return;
  }
  watchJob(job);
}

function watchJob(job) {
  stopWatching();
  state.job = job.id;
  $("generate").disabled = true;
  $("interrupt").disabled = false;
  $("progress").value = 0;
  $("progress-text").textContent = "";
  $("preview").hidden = true;
  setStatus("Queued");
  // EventSource cannot send an Authorization header: with auth on, poll instead.
  if (state.auth) pollJob(job.id);
  else streamJob(job.id);
}

function stopWatching() {
  if (state.events) state.events.close();
  state.events = null;
  state.job = null;
}

function streamJob(id) {
  state.events = streamEvents(id, {
    queued: (data) => showQueued(data.position),
    progress: showProgress,
    finished: finishJob,
    isCurrent: (source) => state.events === source,
    fallback: () => {
      state.events = null;
      pollJob(id);
    },
  });
}

async function pollJob(id) {
  while (state.job === id) {
    let job;
    try {
      job = await api(`/api/jobs/${encodeURIComponent(id)}`);
    } catch (error) {
      showError(`Lost track of the job: ${error.message}`);
      finishWatching();
      return;
    }
    if (state.job !== id) return;
    if (FINISHED.has(job.status)) {
      finishJob(job);
      return;
    }
    if (job.status === "running") await pollProgress(id);
    else setStatus("Queued");
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}

// The job's own progress event (what the event stream sends), while it runs.
async function pollProgress(id) {
  try {
    const event = await api(`/api/jobs/${encodeURIComponent(id)}/progress`);
    if (event && state.job === id) showProgress(event);
  } catch {
    // the next poll tries again
  }
}

function showQueued(position) {
  setStatus(position > 0 ? `Queued (${position} ahead)` : "Queued");
}

function showProgress(event) {
  window.emaki.progressEvents += 1;
  const fraction = Math.max(0, Math.min(1, event.progress || 0));
  window.emaki.maxProgress = Math.max(window.emaki.maxProgress, fraction);
  $("progress").value = fraction;
  $("progress").setAttribute("aria-valuenow", String(Math.round(fraction * 100)));
  if (event.steps) {
    // A grid's cells run one after another: say which cell, and what its axes are set to.
    const cell = event.cells ? `Cell ${event.cell}/${event.cells}${(event.cell_labels || []).length
      ? ` (${event.cell_labels.join(", ")})` : ""}, ` : "";
    const batch = event.batches > 1 ? `, batch ${event.batch + 1}/${event.batches}` : "";
    const eta = event.eta ? `, about ${Math.ceil(event.eta)} s left` : "";
    $("progress-text").textContent = `${cell}Step ${event.step}/${event.steps}${batch}${eta}`;
    if (event.cells) window.emaki.gridCells = Math.max(window.emaki.gridCells, event.cell);
  }
  setStatus(`Generating ${Math.round(fraction * 100)}%`);
  if (event.preview) {
    window.emaki.previews += 1;
    $("preview").src = event.preview;
    $("preview").hidden = false;
  }
}

function finishWatching() {
  stopWatching();
  $("generate").disabled = false;
  $("interrupt").disabled = true;
}

function finishJob(job) {
  finishWatching();
  window.emaki.finishedJobs += 1;
  const images = job.images || [];
  if (job.status === "done") {
    $("progress").value = 1;
    $("progress").setAttribute("aria-valuenow", "100");
    $("progress-text").textContent = `${images.length} image${images.length === 1 ? "" : "s"}`;
  } else {
    $("progress-text").textContent = `${job.status[0].toUpperCase()}${job.status.slice(1)}`;
    if (job.status === "failed") showError(`Generation failed: ${job.error || "unknown error"}`);
  }
  setStatus(job.status === "done" ? "Done" : `Job ${job.status}`);
  $("preview").hidden = true;  // the images (or nothing, when stopped) replace the half-made one
  if (images.length) {
    state.lastSeed = images[0].seed;
    $("reuse-seed").disabled = false;
    renderItems($("results"), images, null);
    if (job.kind === "grid") window.emaki.grids += 1;
    loadGallery();
  }
}

async function interrupt() {
  const id = state.job;
  if (!id) return;
  setStatus("Interrupting…");
  try {
    await api(`/api/jobs/${encodeURIComponent(id)}/cancel`, { method: "POST" });
  } catch (error) {
    if (error.status !== 409) showError(error.message);  // 409: it had just ended anyway
  }
}


async function sendToPrompt(imageId) {
  clearError();
  try {
    const info = await api(`/api/images/${encodeURIComponent(imageId)}/params`);
    const unknown = fillForm(info.params, info.fields);
    setStatus(unknown.length ? `Loaded image ${imageId}; not available here: ${unknown.join(", ")}` : `Loaded image ${imageId}`);
    if (!["txt2img", "img2img", "xyz"].includes(currentTab())) showTab("txt2img");
    $("prompt").focus();
  } catch (error) {
    showError(error.message);
  }
}

// ---------------------------------------------------------------- init image (img2img)

function setDenoise(value) {
  $("denoise").value = value;
  $("denoise-range").value = value;
}

// Shows `dataUrl` as the init image once the browser has decoded it; a file that is not an
// image is reported and leaves the current init image as it was.
function setInitImage(dataUrl, name) {
  return new Promise((resolve) => {
    const probe = new Image();
    probe.onload = () => {
      state.init = dataUrl;
      $("init-preview").src = dataUrl;
      $("init-preview").hidden = false;
      $("init-info").textContent = `${name}, ${probe.naturalWidth}×${probe.naturalHeight}`;
      $("init-info").title = name;
      $("init-clear").disabled = false;
      $("mask-image").src = dataUrl;
      resetMask(probe.naturalWidth, probe.naturalHeight);
      $("inpaint-box").hidden = false;
      setStatus(`Init image: ${name}`);
      resolve(true);
    };
    probe.onerror = () => {
      showError(`${name}: the browser cannot read this as an image.`);
      resolve(false);
    };
    probe.src = dataUrl;
  });
}

function clearInitImage() {
  state.init = null;
  $("init-preview").hidden = true;
  $("init-preview").removeAttribute("src");
  $("init-info").textContent = "None: text to image.";
  $("init-info").title = "";
  $("init-clear").disabled = true;
  $("init-file").value = "";
  $("inpaint").checked = false;
  $("inpaint-tools").hidden = true;
  $("inpaint-box").hidden = true;
  $("mask-image").removeAttribute("src");
}

// A generated image as the next init image: its bytes (fetched with the credentials, if any)
// become a data: URL, since the server takes the image itself rather than a reference.
async function useAsInit(row, button) {
  clearError();
  button.disabled = true;
  try {
    if (await setInitImage(await readAsDataUrl(await fetchBlob(row.url)), `image ${row.id}`)) {
      $("init-file").value = "";  // the file input no longer names what is used
      showTab("img2img");  // A1111's "Send to img2img"
      $("init").scrollIntoView({ block: "nearest" });
    }
  } catch (error) {
    showError(`Could not load image ${row.id}: ${error.message}`);
  } finally {
    button.disabled = false;
  }
}

function setUpInit() {
  $("init-file").addEventListener("change", async () => {
    const file = $("init-file").files[0];
    if (!file) return;
    clearError();
    let ok = false;
    try {
      ok = await setInitImage(await readAsDataUrl(file), file.name);
    } catch (error) {
      showError(`${file.name}: ${error.message}`);
    }
    if (!ok) $("init-file").value = "";
  });
  $("init-clear").addEventListener("click", () => {
    clearInitImage();
    setStatus("Init image cleared: text to image");
  });
  $("denoise-range").addEventListener("input", () => { $("denoise").value = $("denoise-range").value; });
  $("denoise").addEventListener("input", () => {
    if ($("denoise").value.trim() !== "") $("denoise-range").value = $("denoise").value;
  });
}


// ---------------------------------------------------------------- PNG parameters

async function readPngParams(file) {
  clearError();
  try {
    const info = await api("/api/png-info", { method: "POST", body: { image: await readAsDataUrl(file) } });
    const unknown = fillForm(info.params, info.fields);
    setStatus(unknown.length ? `Read ${file.name}; not available here: ${unknown.join(", ")}` : `Read ${file.name}`);
  } catch (error) {
    showError(error.status === 404 ? `${file.name}: no generation parameters in this image.` : `${file.name}: ${error.message}`);
  }
}

function hasFiles(event) {
  return event.dataTransfer && Array.from(event.dataTransfer.types || []).includes("Files");
}

// Files dropped anywhere are read for parameters; dragged text still drops into the textareas.
function setUpDrop() {
  const overlay = $("drop-overlay");
  let depth = 0;  // enter/leave fire for every element crossed: count them to know when it left the page
  window.addEventListener("dragenter", (event) => {
    if (!hasFiles(event)) return;
    depth += 1;
    overlay.hidden = false;
  });
  window.addEventListener("dragleave", (event) => {
    if (!hasFiles(event)) return;
    depth = Math.max(0, depth - 1);
    if (depth === 0) overlay.hidden = true;
  });
  window.addEventListener("dragover", (event) => {
    if (hasFiles(event)) event.preventDefault();  // allows the drop
  });
  window.addEventListener("drop", (event) => {
    depth = 0;
    overlay.hidden = true;
    const file = event.dataTransfer && event.dataTransfer.files[0];
    if (!file) return;
    event.preventDefault();
    readPngParams(file);
  });
  $("png-file").addEventListener("change", () => {
    const file = $("png-file").files[0];
    if (file) readPngParams(file);
    $("png-file").value = "";  // choosing the same file again should read it again
  });
}

// ---------------------------------------------------------------- start

async function start() {
  const countPrompt = tokenCounter($("prompt"), $("prompt-tokens"), false);
  const countNegative = tokenCounter($("negative"), $("negative-tokens"), true);
  recountTokens = () => {
    countPrompt();
    countNegative();
  };

  $("generate").addEventListener("click", generate);
  $("interrupt").addEventListener("click", interrupt);
  $("random-seed").addEventListener("click", () => { $("seed").value = -1; });
  $("reuse-seed").addEventListener("click", () => {
    if (state.lastSeed !== null) $("seed").value = state.lastSeed;
  });
  // Ctrl+Enter (Cmd+Enter) generates from any box of the form, as in A1111.
  $("form").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      generate();
    }
  });
  $("gallery-search").addEventListener("input", debounce(() => loadGallery(), DEBOUNCE_MS));
  $("gallery-refresh").addEventListener("click", () => loadGallery());
  $("gallery-more").addEventListener("click", () => loadGallery({ more: true }));
  setUpDrop();
  setUpInit();
  setUpInpaint();
  setUpExtras();
  setUpTraining();
  setUpLoras();
  setUpGallery({ send: sendToPrompt, useInit: useAsInit });
  setUpTagComplete();
  setUpStyles();
  setUpPanels();
  setUpMerge(reloadCheckpoints);
  setUpBatch();
  setUpXyz();
  setUpTabs();

  try {
    await Promise.all([loadChoices(), loadTrainingOptions(), loadLoras(), loadUpscalers(), loadStyles(), loadAxes()]);
    setStatus("Ready");
  } catch (error) {
    showError(`Could not load the model lists: ${error.message}`);
    setStatus("Not ready");
  }
  recountTokens();
  loadGallery();
}

start();
