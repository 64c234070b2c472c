// emaki's web page: a form (with a LoRA picker and an inpainting mask painter over the init image) that queues jobs on
// /api/jobs, watches them (server-sent events, or polling when the server wants credentials), a gallery of what was made,
// an Extras panel that upscales a picture (/api/upscale), and a Train panel that
// queues training runs on /api/train and draws their loss curve. Plain JS, no build step. Text from the server or from images only ever goes into the DOM through textContent.
"use strict";

const $ = (id) => document.getElementById(id);
const AUTH_KEY = "emaki.auth";
const FINISHED = new Set(["done", "failed", "cancelled", "interrupted"]);
const DEBOUNCE_MS = 250;
const POLL_MS = 300;
const GALLERY_PAGE = 48;

const state = {
  auth: sessionStorage.getItem(AUTH_KEY),  // an Authorization header value, once the server asked
  loginWaiter: null,       // one pending sign-in shared by every request that got a 401
  job: null,               // id of the job being watched
  events: null,            // its EventSource, when not polling
  lastSeed: null,          // seed of the first image of the last finished job ("Reuse last")
  checkpoints: [],
  loras: [],               // /api/loras: what the LoRA picker lists
  samplers: [],
  schedulers: [],
  galleryOffset: 0,
  galleryObjectUrls: [],   // blob: URLs made for authenticated image loads, freed on re-render
  init: null,              // img2img: the init image as a data: URL, or null for text to image
};

// Counters of what the page received. The demo model finishes in well under a second, so tests
// (and curious users in the console) read these instead of racing the progress bar.
window.emaki = {
  progressEvents: 0, previews: 0, maxProgress: 0, finishedJobs: 0,
  trainEvents: 0, trainPoints: 0, trainPreviews: 0, trainFinished: 0, maskStrokes: 0, upscales: 0,
};

// ---------------------------------------------------------------- HTTP

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function authHeaders() {
  return state.auth ? { Authorization: state.auth } : {};
}

// JSON request to the server; on a 401 asks the user to sign in and tries again.
// credentials "omit": the server's 401 carries `WWW-Authenticate: Basic`, and with browser
// credentials allowed Chromium would hold the request behind its own login dialog instead of
// handing the 401 to the page.
async function api(path, { method = "GET", body } = {}) {
  for (;;) {
    const headers = authHeaders();
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(path, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body), credentials: "omit",
    });
    if (response.status === 401) {
      await signIn(state.auth ? "Those credentials were not accepted." : "");
      continue;
    }
    const text = await response.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = text;
    }
    if (!response.ok) throw new ApiError(response.status, describeError(response.status, data));
    return data;
  }
}

// A readable message from an error body: `{error, detail: "..."}` (emaki) or FastAPI's
// validation list `{detail: [{loc, msg}, ...]}`.
function describeError(status, data) {
  if (data && typeof data.detail === "string") return data.detail;
  if (data && Array.isArray(data.detail)) {
    return data.detail.map((item) => {
      const field = (item.loc || []).filter((part) => part !== "body").join(".") || "request";
      return `${field}: ${item.msg}`;
    }).join("; ");
  }
  if (typeof data === "string" && data) return `HTTP ${status}: ${data.slice(0, 200)}`;
  return `HTTP ${status}`;
}

// Image URLs are under /api too: with auth on, <img src> cannot send the header, so fetch the
// bytes ourselves and show them through a blob: URL.
async function setImageSource(img, url, objectUrls) {
  if (!state.auth || url.startsWith("data:")) {
    img.src = url;
    return;
  }
  try {
    const response = await fetch(url, { headers: authHeaders(), credentials: "omit" });
    if (!response.ok) return;
    const objectUrl = URL.createObjectURL(await response.blob());
    if (objectUrls) objectUrls.push(objectUrl);
    img.src = objectUrl;
  } catch {
    // a missing thumbnail is not worth an error message
  }
}

// ---------------------------------------------------------------- sign-in

function signIn(problem) {
  if (!state.loginWaiter) {
    state.loginWaiter = new Promise((resolve) => {
      const form = $("login");
      form.hidden = false;
      $("login-error").textContent = problem;
      (state.auth && state.auth.startsWith("Bearer") ? $("login-token") : $("login-user")).focus();
      form.onsubmit = (event) => {
        event.preventDefault();
        const header = credentialsHeader();
        if (!header) {
          $("login-error").textContent = "Give a user and password, or a token.";
          return;
        }
        state.auth = header;
        sessionStorage.setItem(AUTH_KEY, header);
        form.hidden = true;
        form.onsubmit = null;
        state.loginWaiter = null;
        resolve();
      };
    });
  }
  return state.loginWaiter;
}

function credentialsHeader() {
  const token = $("login-token").value.trim();
  if (token) return `Bearer ${token}`;
  const user = $("login-user").value;
  const password = $("login-password").value;
  if (!user || !password) return null;
  // btoa only takes Latin-1: encode as UTF-8 bytes first, as the server decodes it.
  const bytes = new TextEncoder().encode(`${user}:${password}`);
  return `Basic ${btoa(String.fromCharCode(...bytes))}`;
}

// ---------------------------------------------------------------- messages

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

function setStatus(text) {
  $("status").textContent = text;
}

function debounce(fn, ms) {
  let timer = null;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
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

function fillSelect(select, items) {
  select.replaceChildren(...items.map(([value, label]) => new Option(label, value)));
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

function intOrNull(id) {
  const value = $(id).value.trim();
  if (value === "") return null;
  const number = Number(value);
  return Number.isFinite(number) ? Math.trunc(number) : value;  // the server names a bad value
}

// The form as `GenerationParams` fields; empty size fields mean the model's native size.
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
  if (state.init) {
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

async function generate() {
  clearError();
  if (state.init && $("hires").checked) {
    showError("hires fix is for text-to-image; clear the init image");
    setStatus("Not queued");
    return;
  }
  let job;
  try {
    job = await api("/api/jobs", { method: "POST", body: readForm() });
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
  const source = new EventSource(`/api/jobs/${encodeURIComponent(id)}/events`);
  state.events = source;
  source.addEventListener("queued", (event) => showQueued(JSON.parse(event.data).position));
  source.addEventListener("progress", (event) => showProgress(JSON.parse(event.data)));
  for (const name of FINISHED) {
    // The server ends the stream after this event; close first so the browser does not reconnect.
    source.addEventListener(name, (event) => {
      source.close();
      finishJob(JSON.parse(event.data));
    });
  }
  source.onerror = () => {
    // CLOSED means the browser gave up (e.g. a 401 or 404): poll, which can sign in and report.
    if (source.readyState === EventSource.CLOSED && state.events === source) {
      state.events = null;
      pollJob(id);
    }
  };
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
    if (job.status === "running") await pollProgress(id, job);
    else setStatus("Queued");
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}

// /sdapi/v1/progress describes whichever job runs; use it only when it is ours.
async function pollProgress(id, job) {
  try {
    const progress = await api("/sdapi/v1/progress");
    if (progress.state.job !== id || state.job !== id) return;
    showProgress({
      step: progress.state.sampling_step, steps: progress.state.sampling_steps,
      batch: progress.state.job_no, batches: job.params?.n_iter ?? 1,
      progress: progress.progress, eta: progress.eta_relative,
      preview: progress.current_image ? `data:image/png;base64,${progress.current_image}` : null,
    });
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
    const batch = event.batches > 1 ? `, batch ${event.batch + 1}/${event.batches}` : "";
    const eta = event.eta ? `, about ${Math.ceil(event.eta)} s left` : "";
    $("progress-text").textContent = `Step ${event.step}/${event.steps}${batch}${eta}`;
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

// ---------------------------------------------------------------- gallery

function renderItems(container, rows, objectUrls) {
  container.replaceChildren(...rows.map((row) => imageItem(row, objectUrls)));
}

// One image: click the picture to see its parameters; "Send to prompt" loads them in the form.
function imageItem(row, objectUrls) {
  const figure = document.createElement("figure");
  figure.className = "item";
  figure.dataset.imageId = row.id;

  const thumb = document.createElement("button");
  thumb.type = "button";
  thumb.className = "thumb";
  thumb.setAttribute("aria-expanded", "false");
  const img = document.createElement("img");
  img.alt = row.prompt || "generated image";
  img.loading = "lazy";
  img.width = row.width || 64;
  img.height = row.height || 64;
  setImageSource(img, row.url, objectUrls);
  thumb.append(img);

  const caption = document.createElement("figcaption");
  caption.textContent = row.prompt || "(no prompt)";
  caption.title = row.prompt || "";

  const details = document.createElement("pre");
  details.className = "infotext";
  details.textContent = row.infotext || `Seed: ${row.seed}`;
  details.hidden = true;
  thumb.addEventListener("click", () => {
    details.hidden = !details.hidden;
    thumb.setAttribute("aria-expanded", String(!details.hidden));
  });

  const send = document.createElement("button");
  send.type = "button";
  send.className = "send";
  send.textContent = "Send to prompt";
  send.addEventListener("click", () => sendToPrompt(row.id));

  const useInit = document.createElement("button");
  useInit.type = "button";
  useInit.className = "use-init";
  useInit.textContent = "Use as init image";
  useInit.addEventListener("click", () => useAsInit(row, useInit));

  const buttons = document.createElement("div");
  buttons.className = "item-actions";
  buttons.append(send, useInit);

  figure.append(thumb, caption, buttons, details);
  return figure;
}

async function loadGallery({ more = false } = {}) {
  const query = $("gallery-search").value.trim();
  const offset = more ? state.galleryOffset : 0;
  const params = new URLSearchParams({ limit: String(GALLERY_PAGE), offset: String(offset) });
  if (query) params.set("q", query);
  let rows;
  try {
    rows = await api(`/api/gallery?${params}`);
  } catch (error) {
    showError(`Gallery: ${error.message}`);
    return;
  }
  if (!more) {
    state.galleryObjectUrls.forEach((url) => URL.revokeObjectURL(url));
    state.galleryObjectUrls = [];
    $("gallery").replaceChildren();
  }
  $("gallery").append(...rows.map((row) => imageItem(row, state.galleryObjectUrls)));
  state.galleryOffset = offset + rows.length;
  $("gallery-more").hidden = rows.length < GALLERY_PAGE;
  if (!more && rows.length === 0) {
    const empty = document.createElement("p");
    empty.className = "hint";
    empty.textContent = query ? "No image matches that search." : "No images yet.";
    $("gallery").append(empty);
  }
}

async function sendToPrompt(imageId) {
  clearError();
  try {
    const info = await api(`/api/images/${encodeURIComponent(imageId)}/params`);
    const unknown = fillForm(info.params, info.fields);
    setStatus(unknown.length ? `Loaded image ${imageId}; not available here: ${unknown.join(", ")}` : `Loaded image ${imageId}`);
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

// ---------------------------------------------------------------- inpainting: the mask painter

// The mask canvas has the init image's pixel size and lies over it on screen: painted pixels
// are opaque white, the rest transparent (shown half see-through by the style sheet).
const painter = { last: null };

function resetMask(width, height) {
  const canvas = $("mask-canvas");
  canvas.width = width;
  canvas.height = height;
  canvas.getContext("2d").clearRect(0, 0, width, height);
}

// Where a pointer event falls, in image pixels, and how many image pixels one screen pixel is.
function maskPoint(event) {
  const canvas = $("mask-canvas");
  const box = canvas.getBoundingClientRect();
  const scale = canvas.width / box.width;
  return { x: (event.clientX - box.left) * scale, y: (event.clientY - box.top) * (canvas.height / box.height), scale };
}

// A brush (or eraser) stroke from one point to the next; the brush size is in screen pixels.
function paintStroke(from, to) {
  const context = $("mask-canvas").getContext("2d");
  context.globalCompositeOperation = $("mask-eraser").checked ? "destination-out" : "source-over";
  context.strokeStyle = "#fff";
  context.lineWidth = Number($("mask-brush").value) * to.scale;
  context.lineCap = "round";
  context.lineJoin = "round";
  context.beginPath();
  context.moveTo(from.x, from.y);
  context.lineTo(to.x, to.y);
  context.stroke();
  window.emaki.maskStrokes += 1;
}

function invertMask() {
  const canvas = $("mask-canvas");
  const context = canvas.getContext("2d");
  const pixels = context.getImageData(0, 0, canvas.width, canvas.height);
  for (let i = 0; i < pixels.data.length; i += 4) {
    pixels.data[i] = pixels.data[i + 1] = pixels.data[i + 2] = 255;
    pixels.data[i + 3] = 255 - pixels.data[i + 3];
  }
  context.putImageData(pixels, 0, 0);
}

// The mask as the server takes it: a PNG data URL, white = repaint, black = keep.
function maskDataUrl() {
  const canvas = $("mask-canvas");
  const out = document.createElement("canvas");
  out.width = canvas.width;
  out.height = canvas.height;
  const context = out.getContext("2d");
  context.fillStyle = "#000";
  context.fillRect(0, 0, out.width, out.height);
  context.drawImage(canvas, 0, 0);
  return out.toDataURL("image/png");
}

// The inpainting fields of a job (A1111's names and values).
function readInpaint() {
  return {
    mask: maskDataUrl(),
    mask_blur: intOrNull("mask-blur") ?? 4,
    inpainting_mask_invert: Number($("mask-mode").value),
    inpainting_fill: Number($("masked-content").value),
    inpaint_full_res: $("inpaint-area").value === "masked",
    inpaint_full_res_padding: intOrNull("inpaint-padding") ?? 32,
  };
}

function setUpInpaint() {
  const canvas = $("mask-canvas");
  $("inpaint").addEventListener("change", () => { $("inpaint-tools").hidden = !$("inpaint").checked; });
  $("mask-brush").addEventListener("input", () => { $("mask-brush-size").textContent = `${$("mask-brush").value} px`; });
  $("mask-invert").addEventListener("click", invertMask);
  $("mask-clear").addEventListener("click", () => resetMask(canvas.width, canvas.height));
  canvas.addEventListener("pointerdown", (event) => {
    canvas.setPointerCapture(event.pointerId);
    painter.last = maskPoint(event);
    paintStroke(painter.last, painter.last);
  });
  canvas.addEventListener("pointermove", (event) => {
    if (!painter.last) return;
    const point = maskPoint(event);
    paintStroke(painter.last, point);
    painter.last = point;
  });
  for (const name of ["pointerup", "pointercancel"]) {
    canvas.addEventListener(name, () => { painter.last = null; });
  }
}

// ---------------------------------------------------------------- extras: upscale a picture

const extras = { picture: null, name: "" };

// The upscalers the server has (/api/upscalers); model files also join the hires fix's menu.
async function loadUpscalers() {
  const usable = (await api("/api/upscalers")).filter((row) => !row.reason && row.name !== "None");
  fillSelect($("extras-upscaler"), usable.map((row) => [row.name, row.kind === "model" ? `${row.name} (${row.architecture}, ${row.scale}x)` : row.name]));
  const hires = $("hr-upscaler");
  for (const row of usable) {
    if (![...hires.options].some((option) => option.value === row.name)) hires.append(new Option(row.name, row.name));
  }
}

async function runExtras() {
  clearError();
  $("extras-run").disabled = true;
  $("extras-info").textContent = "Upscaling…";
  try {
    const scale = $("extras-scale").value.trim() === "" ? 2 : Number($("extras-scale").value);
    const result = await api("/api/upscale", {
      method: "POST", body: { image: extras.picture, upscaler: $("extras-upscaler").value, scale },
    });
    $("extras-result").src = result.image;
    $("extras-result").hidden = false;
    $("extras-download").href = result.image;
    $("extras-download").download = `${extras.name.replace(/\.[^.]*$/, "") || "picture"}-upscaled.png`;
    $("extras-download").hidden = false;
    $("extras-info").textContent = `${result.width}×${result.height}: ${result.infotext}`;
    window.emaki.upscales += 1;
  } catch (error) {
    showError(error.message);
    $("extras-info").textContent = "Not upscaled.";
  } finally {
    $("extras-run").disabled = !extras.picture;
  }
}

function setUpExtras() {
  $("extras-file").addEventListener("change", async () => {
    const file = $("extras-file").files[0];
    if (!file) return;
    clearError();
    try {
      extras.picture = await readAsDataUrl(file);
      extras.name = file.name;
      $("extras-info").textContent = file.name;
      $("extras-run").disabled = false;
    } catch (error) {
      showError(`${file.name}: ${error.message}`);
    }
  });
  $("extras-run").addEventListener("click", runExtras);
}

// A generated image as the next init image: its bytes (fetched with the credentials, if any)
// become a data: URL, since the server takes the image itself rather than a reference.
async function useAsInit(row, button) {
  clearError();
  button.disabled = true;
  try {
    for (;;) {
      const response = await fetch(row.url, { headers: authHeaders(), credentials: "omit" });
      if (response.status === 401) {
        await signIn(state.auth ? "Those credentials were not accepted." : "");
        continue;
      }
      if (!response.ok) throw new ApiError(response.status, `HTTP ${response.status}`);
      if (await setInitImage(await readAsDataUrl(await response.blob()), `image ${row.id}`)) {
        $("init-file").value = "";  // the file input no longer names what is used
        $("init").scrollIntoView({ block: "nearest" });
      }
      return;
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

function readAsDataUrl(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

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

// ---------------------------------------------------------------- training

const training = {
  job: null,       // id of the training job being watched
  events: null,    // its EventSource, when not polling
  learnRates: {},  // each kind's default learning rate (the field's placeholder)
  losses: [],      // the curve drawn: [[step, loss], ...]
};
const CURVE = { left: 52, top: 8, width: 340, height: 132 };  // the plot area inside the SVG's viewBox

async function loadTrainingOptions() {
  const options = await api("/api/train/options");
  training.learnRates = options.learn_rates;
  fillSelect($("train-template"), [["", "Default"], ...options.templates.map((name) => [name, name])]);
  fillSelect($("train-activation"), [["", "Default"], ...options.activations.map((name) => [name, name])]);
  $("train-activation").value = "";
  showTrainingKind();
}

function showTrainingKind() {
  const kind = $("train-kind").value;
  $("train-embedding-fields").hidden = kind !== "embedding";
  $("train-hypernetwork-fields").hidden = kind !== "hypernetwork";
  $("train-lora-fields").hidden = kind !== "lora";
  $("train-lr").placeholder = training.learnRates[kind] || "";
}

// The form as TrainingParams fields; a mistake the page can see is thrown as an Error.
function readTrainingForm() {
  const kind = $("train-kind").value;
  const name = $("train-name").value.trim();
  const data = $("train-data").value.trim();
  if (!name) throw new Error("Name: give the embedding, hypernetwork or LoRA a name.");
  if (!data) throw new Error("Dataset folder: give the folder of training images on the server.");
  const body = {
    kind, name, data, model: $("model").value || null,
    steps: intOrNull("train-steps"), batch_size: intOrNull("train-batch"),
    preview_every: intOrNull("train-preview-every"),
  };
  for (const key of ["steps", "batch_size", "preview_every"]) if (body[key] === null) delete body[key];
  const rate = $("train-lr").value.trim();
  if (rate) body.learn_rate = rate;
  if ($("train-template").value) body.template = $("train-template").value;
  const existing = $("train-existing").value;
  if (existing) body[existing] = true;
  if (kind === "embedding") {
    body.init_text = $("train-init-text").value;
    const vectors = intOrNull("train-vectors");
    if (vectors !== null) body.num_vectors_per_token = vectors;
  } else if (kind === "lora") {
    const rank = intOrNull("train-rank");
    if (rank !== null) body.network_dim = rank;
    const convRank = intOrNull("train-conv-rank");
    if (convRank !== null) body.conv_dim = convRank;
  } else {
    const text = $("train-layers").value.trim();
    if (text) {
      const layers = text.split(",").map((part) => part.trim()).filter(Boolean).map(Number);
      if (layers.some((x) => !Number.isFinite(x))) {
        throw new Error(`Layer structure: expected numbers such as "1, 2, 1", got "${text}".`);
      }
      body.layer_structure = layers;
    }
    if ($("train-activation").value) body.activation_func = $("train-activation").value;
  }
  return body;
}

async function startTraining() {
  clearError();
  let body;
  try {
    body = readTrainingForm();
  } catch (error) {
    showError(error.message);
    return;
  }
  let job;
  try {
    job = await api("/api/train", { method: "POST", body });
  } catch (error) {
    showError(`Training not started: ${error.message}`);
    return;
  }
  watchTraining(job);
}

function watchTraining(job) {
  stopWatchingTraining();
  training.job = job.id;
  $("train-start").disabled = true;
  $("train-cancel").disabled = false;
  $("train-progress").value = 0;
  $("train-result").textContent = "";
  $("train-preview").hidden = true;
  drawLossCurve([]);
  $("train-status").textContent = `Queued: ${job.params.kind} ${job.params.name}`;
  if (state.auth) pollTraining(job.id);
  else streamTraining(job.id);
}

function stopWatchingTraining() {
  if (training.events) training.events.close();
  training.events = null;
  training.job = null;
}

function streamTraining(id) {
  const source = new EventSource(`/api/jobs/${encodeURIComponent(id)}/events`);
  training.events = source;
  source.addEventListener("queued", (event) => {
    const position = JSON.parse(event.data).position;
    $("train-status").textContent = position > 0 ? `Queued (${position} ahead)` : "Queued";
  });
  source.addEventListener("progress", (event) => showTraining(JSON.parse(event.data)));
  for (const name of FINISHED) {
    source.addEventListener(name, (event) => {
      source.close();
      finishTraining(JSON.parse(event.data));
    });
  }
  source.onerror = () => {
    if (source.readyState === EventSource.CLOSED && training.events === source) {
      training.events = null;
      pollTraining(id);
    }
  };
}

// With credentials (EventSource cannot send them): the job, and while it runs its progress event.
async function pollTraining(id) {
  while (training.job === id) {
    let job;
    try {
      job = await api(`/api/jobs/${encodeURIComponent(id)}`);
      if (training.job !== id) return;
      if (FINISHED.has(job.status)) {
        finishTraining(job);
        return;
      }
      const event = job.status === "running" ? await api(`/api/jobs/${encodeURIComponent(id)}/progress`) : null;
      if (event && training.job === id) showTraining(event);
    } catch (error) {
      showError(`Lost track of the training job: ${error.message}`);
      finishWatchingTraining();
      return;
    }
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}

function formatLoss(loss) {
  return loss === null || loss === undefined ? "n/a" : Number(loss).toPrecision(4);
}

function showTraining(event) {
  const t = event.training;
  if (!t) return;
  window.emaki.trainEvents += 1;
  const fraction = t.total ? Math.max(0, Math.min(1, t.step / t.total)) : 0;
  $("train-progress").value = fraction;
  $("train-progress").setAttribute("aria-valuenow", String(Math.round(fraction * 100)));
  const eta = event.eta ? `, about ${Math.ceil(event.eta)} s left` : "";
  const rollbacks = t.rollbacks ? `, ${t.rollbacks} roll-back${t.rollbacks === 1 ? "" : "s"}` : "";
  $("train-status").textContent = `Step ${t.step}/${t.total}, loss ${formatLoss(t.loss)}, `
    + `learning rate ${Number(t.learn_rate).toPrecision(3)}, epoch ${t.epoch}${rollbacks}${eta}`
    + (t.message ? `. ${t.message}` : "");
  drawLossCurve(t.losses || []);
  if (t.preview) {
    window.emaki.trainPreviews += 1;
    $("train-preview").src = `data:image/png;base64,${t.preview}`;
    $("train-preview").hidden = false;
  }
}

// The loss series as a polyline in the SVG's plot area, with its range written on the axes.
function drawLossCurve(losses) {
  training.losses = losses;
  window.emaki.trainPoints = losses.length;
  const line = $("train-loss-line");
  const labels = ["train-loss-max", "train-loss-min", "train-step-first", "train-step-last"];
  if (!losses.length) {
    line.setAttribute("points", "");
    for (const id of labels) $(id).textContent = "";
    return;
  }
  const steps = losses.map((point) => point[0]);
  const values = losses.map((point) => point[1]);
  const [first, last] = [Math.min(...steps), Math.max(...steps)];
  let [low, high] = [Math.min(...values), Math.max(...values)];
  if (high === low) [low, high] = [low - 1e-6, high + 1e-6];
  const x = (step) => CURVE.left + (last === first ? CURVE.width : ((step - first) / (last - first)) * CURVE.width);
  const y = (loss) => CURVE.top + (1 - (loss - low) / (high - low)) * CURVE.height;
  line.setAttribute("points", losses.map(([step, loss]) => `${x(step).toFixed(1)},${y(loss).toFixed(1)}`).join(" "));
  $("train-loss-max").textContent = Number(high).toPrecision(3);
  $("train-loss-min").textContent = Number(low).toPrecision(3);
  $("train-step-first").textContent = String(first);
  $("train-step-last").textContent = String(last);
}

function finishWatchingTraining() {
  stopWatchingTraining();
  $("train-start").disabled = false;
  $("train-cancel").disabled = true;
}

function finishTraining(job) {
  finishWatchingTraining();
  window.emaki.trainFinished += 1;
  const result = job.result || {};
  if (job.status === "done" || job.status === "interrupted") {
    const last = training.losses[training.losses.length - 1];
    if (result.final_loss != null && (!last || last[0] < result.step)) {
      drawLossCurve([...training.losses, [result.step, result.final_loss]]);  // the step after the last event
    }
    $("train-progress").value = result.total ? result.step / result.total : 1;
    const how = job.status === "done" ? "Done" : "Cancelled";
    $("train-status").textContent = `${how} at step ${result.step}/${result.total}`
      + (result.final_loss != null ? `, last loss ${formatLoss(result.final_loss)}` : "");
    $("train-result").textContent = `Saved: ${result.path}`;
    $("train-result").title = result.log_directory ? `Loss log and previews: ${result.log_directory}` : "";
  } else if (job.status === "failed") {
    $("train-status").textContent = "Failed";
    showError(`Training failed: ${job.error || "unknown error"}`);
  } else {
    $("train-status").textContent = "Cancelled before it started";
  }
}

async function cancelTraining() {
  const id = training.job;
  if (!id) return;
  $("train-status").textContent = "Cancelling…";
  try {
    await api(`/api/jobs/${encodeURIComponent(id)}/cancel`, { method: "POST" });
  } catch (error) {
    if (error.status !== 409) showError(error.message);
  }
}

function setUpTraining() {
  $("train-kind").addEventListener("change", showTrainingKind);
  $("train-start").addEventListener("click", startTraining);
  $("train-cancel").addEventListener("click", cancelTraining);
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
  for (const area of [$("prompt"), $("negative")]) {
    area.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey) && !$("generate").disabled) generate();
    });
  }
  $("gallery-search").addEventListener("input", debounce(() => loadGallery(), DEBOUNCE_MS));
  $("gallery-refresh").addEventListener("click", () => loadGallery());
  $("gallery-more").addEventListener("click", () => loadGallery({ more: true }));
  setUpDrop();
  setUpInit();
  setUpInpaint();
  setUpExtras();
  setUpTraining();
  setUpLoras();

  try {
    await Promise.all([loadChoices(), loadTrainingOptions(), loadLoras(), loadUpscalers()]);
    setStatus("Ready");
  } catch (error) {
    showError(`Could not load the model lists: ${error.message}`);
    setStatus("Not ready");
  }
  recountTokens();
  loadGallery();
}

start();
