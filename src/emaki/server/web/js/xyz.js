// The X/Y/Z plot tab: up to three axes (the types /api/grid/axes lists) over the generation form;
// Generate queues one grid job on /api/grid, watched like any job (with per-cell progress).
import { $, api, fillSelect } from "./core.js";

const LETTERS = ["x", "y", "z"];

const xyz = { choices: {} };  // an axis with a fixed set of values (samplers, checkpoints, ...): its names

export async function loadAxes() {
  const axes = await api("/api/grid/axes");
  xyz.choices = Object.fromEntries(axes.filter((axis) => axis.choices).map((axis) => [axis.label, axis.choices]));
  const choices = [["", "Nothing"], ...axes.map((axis) => [axis.label, axis.label])];
  for (const letter of LETTERS) fillSelect($(`xyz-${letter}-type`), choices);
  $("xyz-x-type").value = axes.some((axis) => axis.label === "Steps") ? "Steps" : "";
  for (const letter of LETTERS) offerChoices(letter);
}

// The values box of a choice axis suggests its names (a <datalist>); "Fill" puts them all in.
function offerChoices(letter) {
  const names = xyz.choices[$(`xyz-${letter}-type`).value] || [];
  $(`xyz-${letter}-choices`).replaceChildren(...names.map((name) => new Option(name, name)));
  $(`xyz-${letter}-fill`).disabled = names.length === 0;
}

function fillChoices(letter) {
  const names = xyz.choices[$(`xyz-${letter}-type`).value] || [];
  // CSV as the server reads it: a name with a comma or a quote is quoted.
  $(`xyz-${letter}-values`).value = names.map((n) => (/[",]/.test(n) ? `"${n.replace(/"/g, '""')}"` : n)).join(", ");
}

export function setUpXyz() {
  for (const letter of LETTERS) {
    $(`xyz-${letter}-type`).addEventListener("change", () => offerChoices(letter));
    $(`xyz-${letter}-fill`).addEventListener("click", () => fillChoices(letter));
  }
}

// The grid request's axes and options (GridSpec fields); an axis without a type or values is left out.
export function readGrid() {
  const spec = {
    draw_legend: $("xyz-legend").checked,
    include_lone_images: $("xyz-lone").checked,
    no_fixed_seeds: !$("xyz-fixed").checked,
  };
  for (const letter of LETTERS) {
    const axis = $(`xyz-${letter}-type`).value;
    const values = $(`xyz-${letter}-values`).value.trim();
    if (axis && values) spec[letter] = { axis, values };
  }
  if (!spec.x && !spec.y && !spec.z) throw new Error("X/Y/Z plot: choose an axis type and give its values.");
  return spec;
}
