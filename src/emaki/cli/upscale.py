"""`emaki upscale`: enlarge images with an upscaler (A1111's Extras tab, "Scale by"), and restore
their faces with GFPGAN (`--gfpgan-visibility`, after the upscale as in A1111's postprocessing;
alone without `--model`).

Each result is a PNG that keeps the source's generation parameters and adds A1111's extras
text (`Postprocess upscale by: 2, Postprocess upscaler: R-ESRGAN 4x+, GFPGAN visibility: 1`),
written atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from emaki.cli import app, cli_workspace
from emaki.engine.output import dated_folder
from emaki.errors import EmakiError, ParamsError
from emaki.files import atomic_write
from emaki.infotext import PARAMETERS_KEY, infotext_of

if TYPE_CHECKING:
    from emaki.upscalers import UpscaleProgress

console = Console(emoji=False)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
EXTRAS_KEY = "extras"  # the PNG text chunk A1111's postprocessing writes


def source_images(source: Path) -> list[Path]:
    """The image, or the images directly inside the folder (sorted)."""
    if source.is_dir():
        found = sorted((p for p in source.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
                       key=lambda p: p.name.lower())
        if not found:
            raise EmakiError(f"{source}: no images in this folder (expected {', '.join(IMAGE_SUFFIXES)})")
        return found
    if not source.exists():
        raise EmakiError(f"{source}: no such image or folder")
    return [source]


def output_names(images: list[Path], folder: Path) -> list[Path]:
    """`<stem>.png` in `folder` (`<name>.png` where two sources share a stem); never a source."""
    stems = [p.stem.lower() for p in images]
    targets = [folder / (f"{p.stem}.png" if stems.count(p.stem.lower()) == 1 else f"{p.name}.png") for p in images]
    sources = {p.resolve() for p in images}
    for target in targets:
        if target.resolve() in sources:
            raise ParamsError(f"--out: {target} is one of the source images; choose another folder")
    return targets


def png_info(source: Image.Image, extras: str) -> PngInfo:
    """The source's text chunks and generation parameters, plus A1111's extras text."""
    info = PngInfo()
    for key, value in source.info.items():
        if isinstance(key, str) and isinstance(value, str) and key not in (PARAMETERS_KEY, EXTRAS_KEY):
            info.add_text(key, value)
    parameters = infotext_of(source)
    if parameters:
        info.add_text(PARAMETERS_KEY, parameters)
    info.add_text(EXTRAS_KEY, extras)
    return info


FACES_FIELD = "--gfpgan-visibility"


def check_steps(model: str | None, scale: float | None, gfpgan_visibility: float) -> float:
    """The upscale factor (1: no upscale), refusing a command that would do nothing or enlarge
    without an upscaler."""
    if model is not None:
        return 2.0 if scale is None else scale
    if gfpgan_visibility == 0:
        raise ParamsError("--model: name an upscaler (a name from the upscaler folders, a model file, Lanczos), "
                          "or give --gfpgan-visibility to restore the faces only")
    if scale is not None and scale != 1:
        raise ParamsError(f"--scale: enlarging needs an upscaler (--model); without one only the faces are "
                          f"restored, at --scale 1, not {scale:g}")
    return 1.0


def extras_text(upscaled: str | None, gfpgan_visibility: float) -> str:
    """A1111's extras text: the upscale's part (when one ran), then GFPGAN's."""
    from emaki.infotext import format_number

    parts = [upscaled] if upscaled else []
    if gfpgan_visibility > 0:
        parts.append(f"GFPGAN visibility: {format_number(round(gfpgan_visibility, 3))}")
    return ", ".join(parts)


@app.command("upscale")
def upscale_command(
    source: Annotated[Path, typer.Argument(help="An image, or a folder of images (PNG, JPEG, WebP).")],
    model: Annotated[str | None, typer.Option("--model", "-m", help='Upscaler: a name from the upscaler folders ("R-ESRGAN 4x+", "4x-AnimeSharp"), a model file (.pth, .safetensors), or Lanczos, Nearest. Without it, only --gfpgan-visibility runs.')] = None,
    scale: Annotated[float | None, typer.Option("--scale", help="Upscale factor (the model runs as often as needed, then Lanczos fits the size); default 2 with --model.")] = None,
    tile: Annotated[int | None, typer.Option("--tile", help="Tile size in pixels, 0 for no tiling (A1111's default 192).")] = None,
    overlap: Annotated[int | None, typer.Option("--overlap", help="Tile overlap in pixels, blended (A1111's default 8).")] = None,
    gfpgan_visibility: Annotated[float, typer.Option("--gfpgan-visibility", min=0.0, max=1.0, help="Restore the faces with GFPGAN after the upscale, blended in by this much (0-1; A1111's extras field). Needs GFPGANv1.4.pth and detection_Resnet50_Final.pth in EMAKI_HOME/face-restorers (or A1111's models/GFPGAN with --a1111).")] = 0.0,
    out: Annotated[Path | None, typer.Option("--out", help="Folder for the results (default: EMAKI_HOME/outputs/extras/<date>).")] = None,
    a1111: Annotated[Path | None, typer.Option("--a1111", help="An A1111 install whose models/ESRGAN, RealESRGAN, SwinIR, DAT and GFPGAN folders are searched too.")] = None,
    precision: Annotated[str | None, typer.Option(help="auto (default: bf16 on a CPU with AVX-512 BF16 or AMX, fp16 on a GPU, else fp32), fp32, bf16, fp16.", envvar="EMAKI_PRECISION")] = None,
    threads: Annotated[int | None, typer.Option("--threads", help="CPU threads (default: the idle cores).")] = None,
) -> None:
    """Upscale an image, or every image in a folder, with an ESRGAN-family model or a resampler;
    restore its faces with GFPGAN."""
    # torch and the upscaler libraries: imported by the command only, so `emaki --help` starts at once
    from emaki.devices import DevicePolicy
    from emaki.upscalers import DEFAULT_OVERLAP, DEFAULT_TILE, extras_infotext, find_upscaler
    from emaki.upscalers.upscale import check_upscale_options, open_picture

    factor = check_steps(model, scale, gfpgan_visibility)
    tile = DEFAULT_TILE if tile is None else tile
    overlap = DEFAULT_OVERLAP if overlap is None else overlap
    check_upscale_options(factor, tile, overlap)  # before anything loads
    images = source_images(source)
    workspace = cli_workspace(a1111)
    upscaler = find_upscaler(model, workspace, field="--model", allow_path=True) if model is not None else None
    folder = out if out is not None else dated_folder(workspace.outputs / "extras")
    targets = output_names(images, folder)
    policy = DevicePolicy.choose(precision, threads=threads)
    from emaki.engine import Engine  # diffusers comes with it: imported only when there is work

    engine = Engine(workspace, policy)
    if gfpgan_visibility > 0:  # a missing restorer or detector file is named before any image is written
        engine.face_restoration.check(workspace, "GFPGAN", FACES_FIELD)
    extras = extras_text(extras_infotext(factor, upscaler.name) if upscaler is not None else None, gfpgan_visibility)
    with Progress(TextColumn("[progress.description]{task.description}"), BarColumn(),
                  MofNCompleteColumn(), TimeRemainingColumn(), console=console, transient=True) as bar:
        task = bar.add_task("loading", total=None)
        for index, (path, target) in enumerate(zip(images, targets)):
            bar.update(task, description=f"image {index + 1}/{len(images)}", total=None, completed=0)

            def on_tile(event: UpscaleProgress) -> None:
                bar.update(task, total=event.tiles, completed=event.tile)

            picture = open_picture(path)
            result = picture.convert("RGB")
            if model is not None:
                result = engine.upscale(picture, model, factor, tile=tile, overlap=overlap, progress=on_tile)
            if gfpgan_visibility > 0:  # A1111's postprocessing order: the upscale, then the faces
                result = engine.restore_faces(result, "GFPGAN", gfpgan_visibility, field=FACES_FIELD)
            try:
                with atomic_write(target) as tmp:
                    result.save(tmp, format="PNG", pnginfo=png_info(picture, extras))
            except OSError as e:
                raise EmakiError(f"could not write the image to {target}: {e}") from None
    for target in targets:
        print(target)
