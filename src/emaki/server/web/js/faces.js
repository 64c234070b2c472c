// Face restoration on the page: the generation form's "Restore faces" checkbox and the Extras
// panel's GFPGAN visibility slider. Both are usable only when the server lists a restorer
// (/sdapi/v1/face-restorers: GFPGAN once its file and the face detector's are in its folder);
// otherwise they are disabled, with a hint naming the files and the server's folder.
import { $, api } from "./core.js";

// What A1111 v1.10 downloads and emaki does not: the restorer and facexlib's face detector.
const NEEDED = "GFPGANv1.4.pth and the face detector detection_Resnet50_Final.pth";

// The hint for a server without the files: the folder is the server's own (`gfpgan_models_path`).
async function missingHint() {
  try {
    const flags = await api("/sdapi/v1/cmd-flags");
    return `Restoring faces needs ${NEEDED} in ${flags.gfpgan_models_path} on the server; `
      + "reload the page once they are there.";
  } catch {
    return `Restoring faces needs ${NEEDED} in the server's face-restorers folder.`;
  }
}

function setUsable(usable, hint) {
  const checkbox = $("restore-faces");
  checkbox.disabled = !usable;
  if (!usable) checkbox.checked = false;
  $("restore-faces-hint").textContent = hint;
  const slider = $("extras-gfpgan");
  slider.disabled = !usable;
  if (!usable) {
    slider.value = 0;
    $("extras-gfpgan-value").textContent = "0";
  }
  $("extras-gfpgan-hint").textContent = hint;
  $("extras-gfpgan-hint").hidden = usable;
}

// Asks the server whether GFPGAN can run, and enables or disables the two controls.
export async function loadFaceRestorers() {
  let usable = false;
  try {
    usable = (await api("/sdapi/v1/face-restorers")).some((row) => row.name === "GFPGAN");
  } catch (error) {
    setUsable(false, `Could not ask the server for its face restorers: ${error.message}`);
    return;
  }
  setUsable(usable, usable ? "" : await missingHint());
}

// The checkbox's value as a `GenerationParams` field (only when on: off is the server's default).
export function readRestoreFaces() {
  const checkbox = $("restore-faces");
  return checkbox.checked && !checkbox.disabled ? { restore_faces: true } : {};
}

// Puts an image's `restore_faces` back; returns what this server cannot do, to be reported.
export function fillRestoreFaces(params) {
  const checkbox = $("restore-faces");
  checkbox.checked = Boolean(params.restore_faces) && !checkbox.disabled;
  return params.restore_faces && checkbox.disabled ? ["face restoration (GFPGAN's files are not on the server)"] : [];
}
