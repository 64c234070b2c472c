// The gallery: server-made thumbnails, newest first, searchable (prompt, model, infotext), each
// with "Send to prompt", "Use as init image" and "Delete"; a click opens the lightbox (the full
// image with its infotext; arrow keys for the previous and next image, Esc closes).
import { $, api, element, setImageSource, setStatus, showError, state } from "./core.js";

const GALLERY_PAGE = 48;
const THUMB = 256;

const gallery = {
  rows: [],            // what #gallery shows, in order
  actions: null,       // { send(id), useInit(row, button) } from the page
  shown: null,         // the lightbox's list of rows and the index shown: { rows, index }
  lightboxUrls: [],    // blob: URLs of the lightbox image (with auth on), freed on the next one
};

export function thumbnailUrl(row) {
  return `${row.url}?thumb=${THUMB}`;
}

export function renderItems(container, rows, objectUrls) {
  container.replaceChildren(...rows.map((row) => imageItem(row, rows, objectUrls)));
}

function actionButton(className, text, onClick) {
  const button = element("button", className, text);
  button.type = "button";
  button.addEventListener("click", () => onClick(button));
  return button;
}

// One image: its thumbnail (a click opens the lightbox), its prompt, and what can be done with it.
function imageItem(row, rows, objectUrls) {
  const figure = element("figure", "item");
  figure.dataset.imageId = row.id;

  const thumb = element("button", "thumb");
  thumb.type = "button";
  thumb.title = "Show it large, with its parameters";
  const img = document.createElement("img");
  img.alt = row.prompt || "generated image";
  img.loading = "lazy";
  img.width = row.width || 64;
  img.height = row.height || 64;
  setImageSource(img, thumbnailUrl(row), objectUrls);
  thumb.append(img);
  thumb.addEventListener("click", () => openLightbox(rows, rows.indexOf(row)));

  const caption = element("figcaption", "", row.prompt || "(no prompt)");
  caption.title = row.prompt || "";

  const buttons = element("div", "item-actions");
  buttons.append(
    actionButton("send", "Send to prompt", () => gallery.actions.send(row.id)),
    actionButton("use-init", "Use as init image", (button) => gallery.actions.useInit(row, button)),
    actionButton("delete", "Delete", () => deleteImage(row)),
  );
  figure.append(thumb, caption, buttons);
  return figure;
}

export async function loadGallery({ more = false } = {}) {
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
    gallery.rows = [];
    $("gallery").replaceChildren();
  }
  gallery.rows.push(...rows);
  $("gallery").append(...rows.map((row) => imageItem(row, gallery.rows, state.galleryObjectUrls)));
  state.galleryOffset = offset + rows.length;
  $("gallery-more").hidden = rows.length < GALLERY_PAGE;
  if (gallery.rows.length === 0) {
    const empty = element("p", "hint", query ? "No image matches that search." : "No images yet.");
    $("gallery").append(empty);
  }
}

// ---------------------------------------------------------------- delete

// Asks first (a deleted image's file is gone); then takes it out of every list on the page.
async function deleteImage(row) {
  if (!window.confirm(`Delete image ${row.id} and its file?`)) return false;
  try {
    await api(`/api/images/${encodeURIComponent(row.id)}`, { method: "DELETE" });
  } catch (error) {
    if (error.status !== 404) {  // 404: already gone, take it off the page all the same
      showError(`Could not delete image ${row.id}: ${error.message}`);
      return false;
    }
  }
  for (const node of document.querySelectorAll(`.item[data-image-id="${CSS.escape(String(row.id))}"]`)) node.remove();
  const at = gallery.rows.findIndex((r) => r.id === row.id);
  if (at >= 0) {
    gallery.rows.splice(at, 1);
    state.galleryOffset = Math.max(0, state.galleryOffset - 1);
  }
  window.emaki.deleted += 1;
  setStatus(`Deleted image ${row.id}`);
  return true;
}

// ---------------------------------------------------------------- lightbox

function openLightbox(rows, index) {
  if (index < 0) return;
  gallery.shown = { rows, index };
  showLightboxImage();
  const dialog = $("lightbox");
  if (!dialog.open) dialog.showModal();
}

function showLightboxImage() {
  const { rows, index } = gallery.shown;
  const row = rows[index];
  gallery.lightboxUrls.forEach((url) => URL.revokeObjectURL(url));
  gallery.lightboxUrls = [];
  const img = $("lightbox-image");
  img.alt = row.prompt || "generated image";
  setImageSource(img, row.url, gallery.lightboxUrls);
  $("lightbox").dataset.imageId = row.id;
  $("lightbox-infotext").textContent = row.infotext || `Seed: ${row.seed}`;
  $("lightbox-open").href = row.url;
  $("lightbox-prev").disabled = index === 0;
  $("lightbox-next").disabled = index >= rows.length - 1;
}

function stepLightbox(delta) {
  if (!gallery.shown) return;
  const next = gallery.shown.index + delta;
  if (next < 0 || next >= gallery.shown.rows.length) return;
  gallery.shown.index = next;
  showLightboxImage();
}

function closeLightbox() {
  $("lightbox").close();
}

function setUpLightbox() {
  const dialog = $("lightbox");
  $("lightbox-prev").addEventListener("click", () => stepLightbox(-1));
  $("lightbox-next").addEventListener("click", () => stepLightbox(1));
  $("lightbox-close").addEventListener("click", closeLightbox);
  // Esc closes a modal <dialog> by itself; the arrows walk the list it was opened from (listened
  // for on the document: a button that becomes disabled at either end takes the focus with it).
  document.addEventListener("keydown", (event) => {
    if (!dialog.open) return;
    if (event.key === "ArrowLeft") stepLightbox(-1);
    else if (event.key === "ArrowRight") stepLightbox(1);
    else return;
    event.preventDefault();
  });
  dialog.addEventListener("click", (event) => {
    if (event.target === dialog) closeLightbox();  // a click on the backdrop
  });
  dialog.addEventListener("close", () => { gallery.shown = null; });
  $("lightbox-send").addEventListener("click", () => {
    const row = gallery.shown.rows[gallery.shown.index];
    closeLightbox();
    gallery.actions.send(row.id);
  });
  $("lightbox-init").addEventListener("click", (event) => {
    const row = gallery.shown.rows[gallery.shown.index];
    closeLightbox();
    gallery.actions.useInit(row, event.currentTarget);
  });
  $("lightbox-delete").addEventListener("click", async () => {
    const { rows, index } = gallery.shown;
    const row = rows[index];
    if (!(await deleteImage(row))) return;
    const at = rows.indexOf(row);  // the results list is not the gallery's: remove it there too
    if (at >= 0) rows.splice(at, 1);
    if (!rows.length) closeLightbox();
    else {
      gallery.shown.index = Math.min(index, rows.length - 1);
      showLightboxImage();
    }
  });
}

export function setUpGallery(actions) {
  gallery.actions = actions;
  setUpLightbox();
}
