// img2img's init image: read from a file or taken from a generated image, shown with its size,
// and handed to the mask painter; cleared, the form is text to image again.
import { $, clearError, fetchBlob, readAsDataUrl, setStatus, showError, state } from "./core.js";
import { resetMask } from "./mask.js";

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
// `showImg2img` opens the img2img tab (A1111's "Send to img2img").
export async function useAsInit(row, button, showImg2img) {
  clearError();
  button.disabled = true;
  try {
    if (await setInitImage(await readAsDataUrl(await fetchBlob(row.url)), `image ${row.id}`)) {
      $("init-file").value = "";  // the file input no longer names what is used
      showImg2img();
      $("init").scrollIntoView({ block: "nearest" });
    }
  } catch (error) {
    showError(`Could not load image ${row.id}: ${error.message}`);
  } finally {
    button.disabled = false;
  }
}

export function setUpInit() {
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
