// The Merge tab's "Trace" section: what an unknown merge is made of (`emaki lineage`) on
// /api/lineage, queued as a job and watched like the others (server-sent events, or polling with
// credentials); the result is a table of the estimate per block (each candidate's coefficient,
// the residual) and the summary lines the CLI prints. Loaded by index.html on its own: it only
// reads the shared page state, and lists the checkpoints whenever the Merge tab opens.
import {
  $, api, cancelJob, clearError, element, fillSelect, showError, stopWatching, watchPanelJob,
} from "./core.js";

const trace = { job: null, events: null, names: [] };

window.emaki.lineageEvents = 0;
window.emaki.lineagesFinished = 0;

// The model menu and one checkbox per candidate, keeping what was chosen.
async function loadLineageChoices() {
  try {
    const models = await api("/api/models");
    const names = models.checkpoints.map((c) => [c.name, c.title]);
    const select = $("lineage-model");
    const kept = select.value;
    fillSelect(select, names);
    if ([...select.options].some((o) => o.value === kept)) select.value = kept;
    const box = $("lineage-candidates");
    const ticked = new Set([...box.querySelectorAll("input:checked")].map((input) => input.value));
    box.replaceChildren(...names.map(([name, title]) => {
      const label = element("label", "check");
      const input = document.createElement("input");
      Object.assign(input, { type: "checkbox", value: name, checked: ticked.has(name) });
      label.append(input, ` ${title}`);
      return label;
    }));
  } catch (error) {
    showError(`Trace: ${error.message}`);
  }
}

// The form as /api/lineage's body; a mistake the page can see is thrown as an Error.
function readLineageForm() {
  const model = $("lineage-model").value;
  if (!model) throw new Error("Model: there is no checkpoint to trace.");
  const candidates = [...$("lineage-candidates").querySelectorAll("input:checked")].map((input) => input.value);
  if (candidates.length === 0) throw new Error("Candidates: tick at least one possible parent.");
  return { model, candidates, nonnegative: $("lineage-nonnegative").checked };
}

async function startLineage() {
  clearError();
  let body;
  let job;
  try {
    body = readLineageForm();
    job = await api("/api/lineage", { method: "POST", body });
  } catch (error) {
    showError(`Trace not started: ${error.message}`);
    return;
  }
  trace.names = body.candidates;  // the result names candidates by file, in this order
  $("lineage-summary").replaceChildren();
  $("lineage-table").hidden = true;
  watchPanelJob("lineage", trace, job, { doing: "Comparing", what: "trace", counter: "lineageEvents",
    finished: finishLineage });
}

// A residual (a fraction of the model's norm) as the CLI writes it.
function percent(value) {
  if (value === 0) return "0%";
  if (value < 1e-4) return "<0.01%";
  return value < 0.1 ? `${(value * 100).toPrecision(2)}%` : `${(value * 100).toFixed(1)}%`;
}

// One row per block: each candidate's coefficient, then the residual.
function showLineageResult(result) {
  const files = result.candidates;
  const labels = files.map((file, i) => trace.names[i] ?? file);
  const head = element("tr");
  for (const text of ["Block", ...labels, "Residual"]) head.append(element("th", "", text));
  const rows = Object.entries(result.blocks).map(([block, fit]) => {
    const row = element("tr");
    row.dataset.block = block;
    row.append(element("th", "", block));
    files.forEach((file, i) => {
      const cell = element("td", "", fit.coefficients[file].toFixed(3));
      cell.dataset.candidate = labels[i];
      row.append(cell);
    });
    row.append(element("td", "residual", percent(fit.residual)));
    return row;
  });
  const table = $("lineage-table");
  table.tHead.replaceChildren(head);
  table.tBodies[0].replaceChildren(...rows);
  table.hidden = false;
  $("lineage-summary").replaceChildren(...result.summary.map((line) => element("li", "", line)));
}

function finishLineage(job) {
  stopWatching(trace);
  $("lineage-start").disabled = false;
  $("lineage-cancel").disabled = true;
  if (!job) return;
  window.emaki.lineagesFinished += 1;
  if (job.status === "done") {
    $("lineage-progress").value = 1;
    $("lineage-status").textContent = "Done";
    showLineageResult(job.result);
  } else if (job.status === "failed") {
    $("lineage-status").textContent = "Failed";
    showError(`Trace failed: ${job.error || "unknown error"}`);
  } else {
    $("lineage-status").textContent = `Trace ${job.status}`;
  }
}

async function cancelLineage() {
  if (trace.job) await cancelJob(trace.job);
}

function setUpLineage() {
  $("lineage-start").addEventListener("click", startLineage);
  $("lineage-cancel").addEventListener("click", cancelLineage);
  // app.js marks the open tab on <body>: list the checkpoints each time the Merge tab opens, and
  // again when a merge there is done (its status says so), so a new merge can be traced at once.
  const onMergeTab = () => {
    if (document.body.dataset.tab === "merge") loadLineageChoices();
  };
  new MutationObserver(onMergeTab).observe(document.body, { attributes: true, attributeFilter: ["data-tab"] });
  new MutationObserver(() => {
    if ($("merge-status").textContent.startsWith("Done")) onMergeTab();
  }).observe($("merge-status"), { childList: true, characterData: true, subtree: true });
  onMergeTab();
}

setUpLineage();
