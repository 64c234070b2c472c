"""`emaki upscale`: enlarge images with an upscaler (A1111's Extras tab, "Scale by").

Each result is a PNG that keeps the source's generation parameters and adds A1111's extras
text (`Postprocess upscale by: 2, Postprocess upscaler: R-ESRGAN 4x+`), written atomically.
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


@app.command("upscale")
def upscale_command(
    source: Annotated[Path, typer.Argument(help="An image, or a folder of images (PNG, JPEG, WebP).")],
    model: Annotated[str, typer.Option("--model", "-m", help='Upscaler: a name from the upscaler folders ("R-ESRGAN 4x+", "4x-AnimeSharp"), a model file (.pth, .safetensors), or Lanczos, Nearest.')],
    scale: Annotated[float, typer.Option("--scale", help="Upscale factor (the model runs as often as needed, then Lanczos fits the size).")] = 2.0,
    tile: Annotated[int | None, typer.Option("--tile", help="Tile size in pixels, 0 for no tiling (A1111's default 192).")] = None,
    overlap: Annotated[int | None, typer.Option("--overlap", help="Tile overlap in pixels, blended (A1111's default 8).")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Folder for the results (default: EMAKI_HOME/outputs/extras/<date>).")] = None,
    a1111: Annotated[Path | None, typer.Option("--a1111", help="An A1111 install whose models/ESRGAN, RealESRGAN, SwinIR and DAT folders are searched too.")] = None,
    precision: Annotated[str | None, typer.Option(help="auto (default: bf16 on a CPU with AVX-512 BF16 or AMX, fp16 on a GPU, else fp32), fp32, bf16, fp16.", envvar="EMAKI_PRECISION")] = None,
    threads: Annotated[int | None, typer.Option("--threads", help="CPU threads (default: the idle cores).")] = None,
) -> None:
    """Upscale an image, or every image in a folder, with an ESRGAN-family model or a resampler."""
    # torch and the upscaler libraries: imported by the command only, so `emaki --help` starts at once
    from emaki.devices import DevicePolicy
    from emaki.upscalers import DEFAULT_OVERLAP, DEFAULT_TILE, extras_infotext, find_upscaler
    from emaki.upscalers.upscale import check_upscale_options, open_picture

    tile = DEFAULT_TILE if tile is None else tile
    overlap = DEFAULT_OVERLAP if overlap is None else overlap
    check_upscale_options(scale, tile, overlap)  # before anything loads
    images = source_images(source)
    workspace = cli_workspace(a1111)
    upscaler = find_upscaler(model, workspace, field="--model", allow_path=True)
    folder = out if out is not None else dated_folder(workspace.outputs / "extras")
    targets = output_names(images, folder)
    policy = DevicePolicy.choose(precision, threads=threads)
    from emaki.engine import Engine  # diffusers comes with it: imported only when there is work

    engine = Engine(workspace, policy)
    extras = extras_infotext(scale, upscaler.name)
    with Progress(TextColumn("[progress.description]{task.description}"), BarColumn(),
                  MofNCompleteColumn(), TimeRemainingColumn(), console=console, transient=True) as bar:
        task = bar.add_task("loading", total=None)
        for index, (path, target) in enumerate(zip(images, targets)):
            bar.update(task, description=f"image {index + 1}/{len(images)}", total=None, completed=0)

            def on_tile(event: UpscaleProgress) -> None:
                bar.update(task, total=event.tiles, completed=event.tile)

            picture = open_picture(path)
            result = engine.upscale(picture, model, scale, tile=tile, overlap=overlap, progress=on_tile)
            try:
                with atomic_write(target) as tmp:
                    result.save(tmp, format="PNG", pnginfo=png_info(picture, extras))
            except OSError as e:
                raise EmakiError(f"could not write the image to {target}: {e}") from None
    for target in targets:
        print(target)
