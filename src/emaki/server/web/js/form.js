// The generation form: its model, sampler and schedule menus, reading it as `GenerationParams`
// fields, and filling it back from an image's parameters (the gallery, a dropped PNG).
import { $, api, fillSelect, intOrNull, showError, state } from "./core.js";
import { fillRestoreFaces, loadFaceRestorers, readRestoreFaces } from "./faces.js";
import { readInpaint } from "./mask.js";
import { pickedStyles, pickStyles } from "./styles.js";

export async function loadChoices() {
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
  await loadFaceRestorers();  // the Restore faces checkbox: usable only when the server has the files
}

// A new checkpoint (a merge): the model menu lists it, and keeps what was chosen.
export async function reloadCheckpoints() {
  const chosen = $("model").value;
  try {
    await loadChoices();
  } catch (error) {
    showError(`Could not list the models: ${error.message}`);
    return;
  }
  if ([...$("model").options].some((o) => o.value === chosen)) $("model").value = chosen;
}

// The form as `GenerationParams` fields; empty size fields mean the model's native size. The tab
// decides the mode, as in A1111: the init image (and mask) go only from the img2img tab.
export function readForm(tab) {
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
  const styles = pickedStyles();
  if (styles.length) params.styles = styles;
  Object.assign(params, readSpeed(), readRestoreFaces());
  if (state.init && tab === "img2img") {
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
    const hiresMerging = numberOrNull("hr-token-merging");
    if (hiresMerging) params.token_merging_ratio_hr = hiresMerging;
    params.denoising_strength = denoise === "" ? 0.75 : Number(denoise);
  }
  return params;
}

function numberOrNull(id) {
  const text = $(id).value.trim();
  return text === "" ? null : Number(text);
}

// The speed options (and tiling): only those switched on are sent, the rest keep the server's defaults.
function readSpeed() {
  const fields = {};
  if ($("tiling").checked) fields.tiling = true;
  if ($("ngms-all").checked) fields.s_min_uncond_all = true;
  // A preset also goes by name: the server sets what the boxes leave off (exact: off, whatever
  // the server's settings say).
  if ($("speed").value) fields.speed = $("speed").value;
  for (const [field, [id, read]] of Object.entries(SPEED_BOXES)) {
    const value = read(id);
    if (value) fields[field] = value;
  }
  return fields;
}

// Each speed box: the field it fills, its id and how its text is read.
const SPEED_BOXES = { cache_interval: ["cache-interval", intOrNull], gate_step: ["gate-step", intOrNull],
  s_min_uncond: ["ngms", numberOrNull], token_merging_ratio: ["token-merging", numberOrNull] };

// Fills the speed boxes from `fields` (a missing one: off); `tiling` only when the fields are a
// whole image's, as a preset has no say over it.
function fillSpeedBoxes(fields) {
  for (const [field, [id]] of Object.entries(SPEED_BOXES)) $(id).value = fields[field] ?? 0;
  $("ngms-all").checked = Boolean(fields.s_min_uncond_all);
}

function fillSpeed(params) {
  $("tiling").checked = Boolean(params.tiling);
  fillSpeedBoxes(params);
  $("speed").value = "";  // an image's own values, whatever preset made them
}

// The Speed menu: a preset fills the boxes with what `emaki generate --speed` would use for this
// many steps (the server says which: /api/speed/NAME), and follows a change of Steps; editing a
// box makes the choice custom again.
async function applySpeedPreset() {
  const name = $("speed").value;
  if (!name) return;
  try {
    fillSpeedBoxes(await api(`/api/speed/${encodeURIComponent(name)}?steps=${intOrNull("steps") ?? 20}`));
  } catch (error) {
    showError(`Could not read the ${name} speed preset: ${error.message}`);
  }
}

export function setUpSpeed() {
  $("speed").addEventListener("change", applySpeedPreset);
  $("steps").addEventListener("change", applySpeedPreset);
  for (const id of [...Object.values(SPEED_BOXES).map(([box]) => box), "ngms-all"]) {
    $(id).addEventListener("input", () => { $("speed").value = ""; });
  }
}

export function setDenoise(value) {
  $("denoise").value = value;
  $("denoise-range").value = value;
}

const same = (a, b) => String(a).toLowerCase() === String(b).toLowerCase();

// Puts parameters (from the gallery or a PNG) back into the form and returns what the page does
// not know (a sampler or model missing here), to be reported instead of silently kept. `fields`
// are the infotext's own fields: the denoising strength is taken only when the image had one
// (the init image itself is never set from here).
export function fillForm(params, fields = {}) {
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
    $("hr-token-merging").value = params.token_merging_ratio_hr || 0;
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
  fillSpeed(params);
  unknown.push(...fillRestoreFaces(params));
  unknown.push(...pickStyles(params.styles || []).map((name) => `style ${name}`));
  return unknown;
}
