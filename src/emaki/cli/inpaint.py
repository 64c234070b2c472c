"""`emaki inpaint`: repaint the masked part of an image; and the inpainting options of
`emaki generate` (`--mask`, `--fill`, `--area`, ...) as `GenerationParams` fields."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from emaki.cli import app
from emaki.errors import ParamsError
from emaki.params import INPAINTING_FILLS

FILLS = {name: index for index, name in enumerate(INPAINTING_FILLS)}
AREAS = {"whole": False, "whole picture": False, "only masked": True}  # A1111's names work too


def _choice(option: str, value: str | None, choices: dict[str, Any]) -> Any:
    """`value` as one of `choices` (case and "-"/" " do not matter), None when not given."""
    if value is None:
        return None
    key = value.strip().lower().replace("-", " ")
    if key not in choices:
        raise ParamsError(f"{option}: expected {', '.join(repr(c) for c in choices)}, got {value!r}")
    return choices[key]


def inpainting_overrides(*, mask: Path | None, mask_blur: int | None, fill: str | None, area: str | None,
                         padding: int | None, invert: bool | None, noise_multiplier: float | None,
                         mask_weight: float | None) -> dict[str, Any]:
    """The given inpainting options of `emaki generate` as params fields (those not given are left out)."""
    fields = {
        "mask": str(mask) if mask is not None else None,
        "mask_blur": mask_blur,
        "inpainting_fill": _choice("--fill", fill, FILLS),
        "inpaint_full_res": _choice("--area", area, AREAS),
        "inpaint_full_res_padding": padding,
        "inpainting_mask_invert": None if invert is None else int(invert),
        "initial_noise_multiplier": noise_multiplier,
        "inpainting_mask_weight": mask_weight,
    }
    return {k: v for k, v in fields.items() if v is not None}


@app.command("inpaint", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def inpaint_command(
    ctx: typer.Context,
    image: Annotated[Path, typer.Argument(help="The image to repaint (PNG, JPEG, WebP).")],
    mask: Annotated[Path, typer.Argument(help="The mask: white is repainted, black kept (in a mask with transparency: opaque is repainted).")],
    prompt: Annotated[str, typer.Argument(help="The prompt (A1111 syntax).")],
    denoise: Annotated[float, typer.Option("--denoise", help="Denoising strength: 0 keeps the masked part, 1 redraws it all.")] = 0.75,
    mask_blur: Annotated[int | None, typer.Option("--mask-blur", help="Blur the mask's edge by this many pixels (default 4).")] = None,
    fill: Annotated[str | None, typer.Option("--fill", help='What the masked part starts from: "fill" (colours from around it), "original" (default), "latent noise" or "latent nothing".')] = None,
    area: Annotated[str | None, typer.Option("--area", help='"whole" picture (default) or "only-masked": the masked part is cropped with --padding, redrawn at --size and pasted back.')] = None,
    padding: Annotated[int | None, typer.Option("--padding", help="only-masked: pixels kept around the mask (default 32).")] = None,
    invert: Annotated[bool, typer.Option("--invert", help="Repaint what the mask leaves out instead.")] = False,
    noise_multiplier: Annotated[float | None, typer.Option("--noise-multiplier", help="Scale the initial noise (default 1).")] = None,
) -> None:
    """Repaint the masked part of an image (inpainting); the rest comes back pixel for pixel.
    Every `emaki generate` option applies too (--negative, --model, --steps, --seed, --size,
    --mask-weight for 9-channel inpainting models, ...); the size defaults to the image's."""
    given = {"--mask-blur": mask_blur, "--fill": fill, "--area": area, "--padding": padding,
             "--noise-multiplier": noise_multiplier}
    options = [part for name, value in given.items() if value is not None for part in (name, str(value))]
    args = ["generate", prompt, "--init-image", str(image), "--mask", str(mask), "--denoise", str(denoise),
            *options, *(["--invert"] if invert else []), *ctx.args]
    typer.main.get_command(app).main(args=args, standalone_mode=False)
