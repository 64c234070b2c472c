// emaki's web page, in tabs: txt2img and img2img/inpaint (one form, with a LoRA picker, styles,
// prompt-tag autocomplete and an inpainting mask painter over the init image) that queues jobs on
// /api/jobs and watches them (server-sent events, or polling when the server wants credentials),
// the X/Y/Z plot (/api/grid), a gallery with a lightbox, Extras (/api/upscale), Train (/api/train,
// with its loss curve), Styles, Merge, Batch (/api/batch), Models and Settings. Plain ES modules,
// no build step: this file holds the tabs, the job watching and the start; each part's own module
// is in js/ (the form in form.js, the LoRA picker in loras.js, Settings in settings.js, ...). Text from the server or from images only ever goes into the DOM through textContent.
import {
  $, api, cancelJob, clearError, debounce, DEBOUNCE_MS, FINISHED, POLL_MS, readAsDataUrl, setStatus, showError, state,
  streamEvents,
} from "./js/core.js";
import { setUpBatch } from "./js/batch.js";
import { loadUpscalers, setUpExtras } from "./js/extras.js";
import { fillForm, loadChoices, readForm, reloadCheckpoints, setUpSpeed } from "./js/form.js";
import { loadGallery, renderItems, setUpGallery } from "./js/gallery.js";
import { setUpInit, useAsInit } from "./js/init_image.js";
import { loadLoras, setUpLoras } from "./js/loras.js";
import { setUpInpaint } from "./js/mask.js";
import { loadMergeChoices, setUpMerge } from "./js/merge.js";
import { loadModels, setUpPanels } from "./js/panels.js";
import { loadSettings, setUpSettings } from "./js/settings.js";
import { loadStyles, setUpStyles } from "./js/styles.js";
import { setUpTagComplete } from "./js/tags.js";
import { tokenCounter } from "./js/tokens.js";
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


// ---------------------------------------------------------------- jobs

// Recounts both prompts' tokens (after the form was filled in); set when start() makes the counters.
let recountTokens = () => {};

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
      ? await api("/api/grid", { method: "POST", body: { params: readForm(currentTab()), ...readGrid() } })
      : await api("/api/jobs", { method: "POST", body: readForm(currentTab()) });
  } catch (error) {
    showError(error.message);
    setStatus("Not queued");
    return;
  }
  watchGeneration(job);
}

// Not core.js's watchJob: a generation keeps watching when one progress read fails (the next poll
// tries again), and shows "Queued" while polling; the panels' jobs stop on a failed read.
function watchGeneration(job) {
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
  await cancelJob(id);
}


async function sendToPrompt(imageId) {
  clearError();
  try {
    const info = await api(`/api/images/${encodeURIComponent(imageId)}/params`);
    const unknown = fillForm(info.params, info.fields);
    recountTokens();
    setStatus(unknown.length ? `Loaded image ${imageId}; not available here: ${unknown.join(", ")}` : `Loaded image ${imageId}`);
    if (!["txt2img", "img2img", "xyz"].includes(currentTab())) showTab("txt2img");
    $("prompt").focus();
  } catch (error) {
    showError(error.message);
  }
}

// ---------------------------------------------------------------- PNG parameters

async function readPngParams(file) {
  clearError();
  try {
    const info = await api("/api/png-info", { method: "POST", body: { image: await readAsDataUrl(file) } });
    const unknown = fillForm(info.params, info.fields);
    recountTokens();
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
  setUpSpeed();
  setUpInit();
  setUpInpaint();
  setUpExtras();
  setUpTraining();
  setUpLoras();
  setUpGallery({ send: sendToPrompt, useInit: (row, button) => useAsInit(row, button, () => showTab("img2img")) });
  setUpTagComplete();
  setUpStyles();
  setUpPanels();
  setUpSettings();
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
