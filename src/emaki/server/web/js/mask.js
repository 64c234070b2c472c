import { $, intOrNull } from "./core.js";

// ---------------------------------------------------------------- inpainting: the mask painter

// The mask canvas has the init image's pixel size and lies over it on screen: painted pixels
// are opaque white, the rest transparent (shown half see-through by the style sheet).
const painter = { last: null };

export function resetMask(width, height) {
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

window.emaki.maskDataUrl = maskDataUrl;  // tests (and the console) read the mask as sent

// The inpainting fields of a job (A1111's names and values).
export function readInpaint() {
  return {
    mask: maskDataUrl(),
    mask_blur: intOrNull("mask-blur") ?? 4,
    inpainting_mask_invert: Number($("mask-mode").value),
    inpainting_fill: Number($("masked-content").value),
    inpaint_full_res: $("inpaint-area").value === "masked",
    inpaint_full_res_padding: intOrNull("inpaint-padding") ?? 32,
  };
}

export function setUpInpaint() {
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

