// What every part of emaki's page shares: the page state, the HTTP helper (with the sign-in it
// asks for on a 401), messages, and small form helpers. Text from the server or from images only
// ever goes into the DOM through textContent.
export const $ = (id) => document.getElementById(id);
export const AUTH_KEY = "emaki.auth";
export const FINISHED = new Set(["done", "failed", "cancelled", "interrupted"]);
export const DEBOUNCE_MS = 250;
export const POLL_MS = 300;

export const state = {
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
  deleted: 0, tagInserts: 0, grids: 0, gridCells: 0, mergeEvents: 0, mergesFinished: 0,
};

// ---------------------------------------------------------------- HTTP

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export function authHeaders() {
  return state.auth ? { Authorization: state.auth } : {};
}

// The browser's own credentials, or none. The page needs the browser's sign-in when the server
// wants credentials, and the browser then sends them with the page's requests too: one sign-in.
// Once the page holds credentials of its own (its form, after a 401), "omit": the server's 401
// carries `WWW-Authenticate: Basic`, and with browser credentials allowed Chromium would hold the
// request behind its own dialog instead of handing the 401 to the page.
export function fetchCredentials() {
  return state.auth ? "omit" : "same-origin";
}

// A request with the page's credentials; on a 401 asks the user to sign in and tries again.
export async function signedFetch(url, { method = "GET", headers = {}, body } = {}) {
  for (;;) {
    const response = await fetch(url, {
      method, headers: { ...authHeaders(), ...headers }, body, credentials: fetchCredentials(),
    });
    if (response.status !== 401) return response;
    await signIn(state.auth ? "Those credentials were not accepted." : "");
  }
}

// A file from the server (an image, a summary) as a Blob.
export async function fetchBlob(url) {
  const response = await signedFetch(url);
  if (!response.ok) throw new ApiError(response.status, `HTTP ${response.status}`);
  return response.blob();
}

// JSON request to the server.
export async function api(path, { method = "GET", body } = {}) {
  const response = await signedFetch(path, body === undefined ? { method } : {
    method, headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  });
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
export async function setImageSource(img, url, objectUrls) {
  if (!state.auth || url.startsWith("data:")) {
    img.src = url;
    return;
  }
  try {
    const response = await fetch(url, { headers: authHeaders(), credentials: fetchCredentials() });
    if (!response.ok) return;
    const objectUrl = URL.createObjectURL(await response.blob());
    if (objectUrls) objectUrls.push(objectUrl);
    img.src = objectUrl;
  } catch {
    // a missing thumbnail is not worth an error message
  }
}

// ---------------------------------------------------------------- sign-in

export function signIn(problem) {
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

// ---------------------------------------------------------------- job events

// Watch job `id` through its server-sent events (`queued`, `progress`, then one of FINISHED, after
// which the server ends the stream: closed first so that the browser does not reconnect). When the
// browser gives up on the stream (a 401 or a 404 closes it) and it is still `isCurrent`, `fallback`
// polls instead, which can sign in and report.
export function streamEvents(id, { queued, progress, finished, isCurrent, fallback }) {
  const source = new EventSource(`/api/jobs/${encodeURIComponent(id)}/events`);
  if (queued) source.addEventListener("queued", (event) => queued(JSON.parse(event.data)));
  source.addEventListener("progress", (event) => progress(JSON.parse(event.data)));
  for (const name of FINISHED) {
    source.addEventListener(name, (event) => {
      source.close();
      finished(JSON.parse(event.data));
    });
  }
  source.onerror = () => {
    if (source.readyState === EventSource.CLOSED && isCurrent(source)) fallback();
  };
  return source;
}

// Watch job `id` until it ends, for a panel whose `holder` keeps the job it watches (`holder.job`;
// another job there stops this watch) and its event source (`holder.events`): through the job's
// events, or by polling the job and, while it runs, its progress when the page holds credentials
// (EventSource cannot send them) or the stream was refused. A failed read stops watching:
// `lost(error)`.
export function watchJob(id, holder, { queued, progress, finished, lost }) {
  const poll = () => pollJobUntilEnd(id, holder, { progress, finished, lost });
  if (state.auth) {
    poll();
    return;
  }
  holder.events = streamEvents(id, {
    queued, progress, finished,
    isCurrent: (source) => holder.events === source,
    fallback: () => {
      holder.events = null;
      poll();
    },
  });
}

// Watch a panel's job (Merge, Trace) until it ends: the panel's elements are named after it
// (`${panel}-start`, `-cancel`, `-progress`, `-status`); the status line says `doing` and how far,
// each progress event counts in `window.emaki[counter]`; a lost watch is shown, naming `what`, and
// ends it as `finished(null)`.
export function watchPanelJob(panel, holder, job, { doing, what, counter, finished }) {
  holder.job = job.id;
  $(`${panel}-start`).disabled = true;
  $(`${panel}-cancel`).disabled = false;
  $(`${panel}-progress`).value = 0;
  $(`${panel}-status`).textContent = "Queued";
  watchJob(job.id, holder, {
    progress: (event) => {
      const fraction = Math.max(0, Math.min(1, event.progress || 0));
      $(`${panel}-progress`).value = fraction;
      $(`${panel}-status`).textContent = `${doing}: ${Math.round(fraction * 100)}%`;
      window.emaki[counter] += 1;
    },
    finished,
    lost: (error) => {
      showError(`Lost track of the ${what}: ${error.message}`);
      finished(null);
    },
  });
}

// Stop the watch `holder` keeps (`watchJob`): its event stream closed, no job to watch.
export function stopWatching(holder) {
  if (holder.events) holder.events.close();
  holder.events = null;
  holder.job = null;
}

// Ask the server to cancel job `id` (a running one is interrupted); a 409 means it had just
// ended anyway, so only other errors are shown.
export async function cancelJob(id) {
  try {
    await api(`/api/jobs/${encodeURIComponent(id)}/cancel`, { method: "POST" });
  } catch (error) {
    if (error.status !== 409) showError(error.message);
  }
}

async function pollJobUntilEnd(id, holder, { progress, finished, lost }) {
  const path = `/api/jobs/${encodeURIComponent(id)}`;
  while (holder.job === id) {
    try {
      const job = await api(path);
      if (holder.job !== id) return;
      if (FINISHED.has(job.status)) {
        finished(job);
        return;
      }
      const event = job.status === "running" ? await api(`${path}/progress`) : null;
      if (event && holder.job === id) progress(event);
    } catch (error) {
      lost(error);
      return;
    }
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}

// ---------------------------------------------------------------- messages

export function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = false;
}

export function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

export function setStatus(text) {
  $("status").textContent = text;
}

export function debounce(fn, ms) {
  let timer = null;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}


export function fillSelect(select, items) {
  select.replaceChildren(...items.map(([value, label]) => new Option(label, value)));
}

export function intOrNull(id) {
  const value = $(id).value.trim();
  if (value === "") return null;
  const number = Number(value);
  return Number.isFinite(number) ? Math.trunc(number) : value;  // the server names a bad value
}

export function readAsDataUrl(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

// A new element with a class and text (never HTML).
export function element(tag, className = "", text = "") {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text) node.textContent = text;
  return node;
}
