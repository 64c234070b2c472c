import {
  $, api, cancelJob, clearError, fillSelect, intOrNull, showError, stopWatching, watchJob,
} from "./core.js";

// ---------------------------------------------------------------- training

const training = {
  job: null,       // id of the training job being watched
  events: null,    // its EventSource, when not polling
  learnRates: {},  // each kind's default learning rate (the field's placeholder)
  losses: [],      // the curve drawn: [[step, loss], ...]
};
const CURVE = { left: 52, top: 8, width: 340, height: 132 };  // the plot area inside the SVG's viewBox

export async function loadTrainingOptions() {
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
  stopWatching(training);
  training.job = job.id;
  $("train-start").disabled = true;
  $("train-cancel").disabled = false;
  $("train-progress").value = 0;
  $("train-result").textContent = "";
  $("train-preview").hidden = true;
  drawLossCurve([]);
  $("train-status").textContent = `Queued: ${job.params.kind} ${job.params.name}`;
  watchJob(job.id, training, {
    queued: ({ position }) => {
      $("train-status").textContent = position > 0 ? `Queued (${position} ahead)` : "Queued";
    },
    progress: showTraining,
    finished: finishTraining,
    lost: (error) => {
      showError(`Lost track of the training job: ${error.message}`);
      finishWatchingTraining();
    },
  });
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
  stopWatching(training);
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
  await cancelJob(id);
}

export function setUpTraining() {
  $("train-kind").addEventListener("change", showTrainingKind);
  $("train-start").addEventListener("click", startTraining);
  $("train-cancel").addEventListener("click", cancelTraining);
}

