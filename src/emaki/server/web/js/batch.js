// The Batch tab: `emaki batch` on the page. JSON Lines of generation parameters (typed, or read
// from a .jsonl file) go to /api/batch under a name; the page then polls /api/batch/{name} until
// nothing is queued or running, and offers the batch's summary.csv. Cancel stops the batch's
// queued and running jobs (/api/batch/{name}/cancel); posting the same name again queues only
// what is not done yet (the server keys items by their parameters), the cancelled items too.
import {
  $, POLL_MS, api, clearError, fetchBlob, showError,
} from "./core.js";
import { loadGallery } from "./gallery.js";

// `run` counts the batches posted from this page: a poll loop stops once a newer one started.
const batch = { run: 0, name: null };

// The batch as a sentence: "3/10 done, 1 failed, 2 cancelled, 0.52 items/s, ETA 14 s".
function describeProgress(progress) {
  const parts = [`${progress.done}/${progress.total} done`, `${progress.failed} failed`];
  if (progress.cancelled) parts.push(`${progress.cancelled} cancelled`);
  if (progress.duplicate) parts.push(`${progress.duplicate} duplicate`);
  if (progress.items_per_s) parts.push(`${progress.items_per_s.toFixed(2)} items/s`);
  if (progress.queued + progress.running > 0) {
    parts.push(progress.eta_s == null ? "ETA unknown" : `ETA ${Math.ceil(progress.eta_s)} s`);
  }
  return parts.join(", ");
}

function showProgress(progress) {
  // Failed, cancelled and duplicate items are finished too: the bar is full when nothing is left to run.
  const finished = progress.done + progress.failed + progress.cancelled + progress.duplicate;
  $("batch-progress").value = progress.total ? finished / progress.total : 0;
  $("batch-status").textContent = describeProgress(progress);
  window.emaki.batchPolls += 1;
}

async function runBatch() {
  clearError();
  const name = $("batch-name").value.trim();
  let posted;
  $("batch-run").disabled = true;
  try {
    posted = await api("/api/batch", { method: "POST", body: { name, jsonl: $("batch-jsonl").value } });
  } catch (error) {
    $("batch-run").disabled = false;
    $("batch-queued").textContent = "Not queued.";
    showError(`Batch not queued: ${error.message}`);
    return;
  }
  const run = ++batch.run;
  batch.name = posted.name;
  const skipped = posted.skipped ? `; ${posted.skipped} skipped (already done or queued)` : "";
  $("batch-queued").textContent = `Queued ${posted.queued} of ${posted.total}${skipped}.`;
  const link = $("batch-summary");
  link.href = `/api/batch/${encodeURIComponent(posted.name)}/summary.csv`;
  link.download = `${posted.name}-summary.csv`;
  link.hidden = false;
  $("batch-cancel").disabled = false;
  await pollBatch(posted.name, run);
}

// Stops the batch being watched; its poll loop then sees the running job end and stops too.
async function cancelBatch() {
  clearError();
  const name = batch.name;
  $("batch-cancel").disabled = true;
  try {
    const progress = await api(`/api/batch/${encodeURIComponent(name)}/cancel`, { method: "POST" });
    $("batch-queued").textContent = `Cancelled ${progress.stopped} of ${progress.total}; done items kept.`;
    showProgress(progress);
  } catch (error) {
    $("batch-cancel").disabled = false;
    showError(`Could not cancel batch ${name}: ${error.message}`);
  }
}

// Polls until nothing of the batch is queued or running, then shows its images in the gallery.
async function pollBatch(name, run) {
  try {
    while (batch.run === run) {
      const progress = await api(`/api/batch/${encodeURIComponent(name)}`);
      if (batch.run !== run) return;
      showProgress(progress);
      if (progress.queued + progress.running === 0) {
        window.emaki.batchesFinished += 1;
        loadGallery();
        return;
      }
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    }
  } catch (error) {
    showError(`Lost track of batch ${name}: ${error.message}`);
  } finally {
    if (batch.run === run) {
      $("batch-run").disabled = false;
      $("batch-cancel").disabled = true;
    }
  }
}

// The summary as a download. It is fetched rather than followed: with auth on, a plain link
// cannot send the page's Authorization header (as images in core.js).
async function downloadSummary(event) {
  event.preventDefault();
  const link = $("batch-summary");
  try {
    const url = URL.createObjectURL(await fetchBlob(link.href));
    const save = document.createElement("a");
    save.href = url;
    save.download = link.download;
    save.click();
    setTimeout(() => URL.revokeObjectURL(url), 1000);  // after the browser took the download
  } catch (error) {
    showError(`Could not download the summary of batch ${batch.name}: ${error.message}`);
  }
}

// A .jsonl file fills the text box, where it can still be edited before Run.
async function readBatchFile() {
  const file = $("batch-file").files[0];
  if (!file) return;
  clearError();
  try {
    $("batch-jsonl").value = await file.text();
    if (!$("batch-name").value.trim()) {
      $("batch-name").value = file.name.replace(/\.[^.]*$/, "").replace(/[^A-Za-z0-9._-]/g, "-").slice(0, 64);
    }
  } catch (error) {
    showError(`${file.name}: ${error.message}`);
  }
  $("batch-file").value = "";  // choosing the same file again reads it again
}

export function setUpBatch() {
  Object.assign(window.emaki, { batchPolls: 0, batchesFinished: 0 });
  $("batch-run").addEventListener("click", runBatch);
  $("batch-cancel").addEventListener("click", cancelBatch);
  $("batch-file").addEventListener("change", readBatchFile);
  $("batch-summary").addEventListener("click", downloadSummary);
}
