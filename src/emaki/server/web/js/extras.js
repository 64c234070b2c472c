import { $, api, clearError, fillSelect, readAsDataUrl, showError } from "./core.js";

// ---------------------------------------------------------------- extras: upscale a picture

const extras = { picture: null, name: "" };

// The upscalers the server has (/api/upscalers), then None (the faces only, with a GFPGAN
// visibility); model files also join the hires fix's menu.
export async function loadUpscalers() {
  const usable = (await api("/api/upscalers")).filter((row) => !row.reason && row.name !== "None");
  fillSelect($("extras-upscaler"), [
    ...usable.map((row) => [row.name, row.kind === "model" ? `${row.name} (${row.architecture}, ${row.scale}x)` : row.name]),
    ["None", "None (restore the faces only)"],
  ]);
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
    // GFPGAN after the upscale (A1111's order); 0, or a disabled slider: faces left as they are
    const gfpgan = $("extras-gfpgan").disabled ? 0 : Number($("extras-gfpgan").value);
    const result = await api("/api/upscale", {
      method: "POST",
      body: { image: extras.picture, upscaler: $("extras-upscaler").value, scale, gfpgan_visibility: gfpgan },
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

export function setUpExtras() {
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
  $("extras-gfpgan").addEventListener("input", () => {
    $("extras-gfpgan-value").textContent = $("extras-gfpgan").value;
  });
}
