"""A1111's "Extras" (v1.10 `scripts/postprocessing_upscale.py`) on the server's engine, the
upscaler listings in A1111's shapes, the SD upscale script's queueing, and face restoration
(GFPGAN after the upscale, as A1111's postprocessing order has it; `emaki.faces`).

    upscaler 1 by a factor (or to width×height: the factor that covers it, then a centred crop)
    upscaler 2 the same way, blended in: Image.blend(first, second, visibility)
    infotext: Postprocess upscale by|to, [Postprocess crop to], Postprocess upscaler, [Postprocess upscaler 2]

The engine's lock keeps an upscale from running while a generation uses the model.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from emaki.engine.engine import Engine
from emaki.engine.sd_upscale import DEFAULT_TILE_SIZE, check_overlap
from emaki.errors import EmakiError, ParamsError
from emaki.faces import find_face_files, restorer_folders
from emaki.infotext import format_number, quote
from emaki.networks import walk_files
from emaki.params import MAX_INPUT_PIXELS, ImageTooLarge
from emaki.server.a1111_schema import ExtrasRequest
from emaki.server.service import Service, check_size_limits, remove_input
from emaki.upscalers import KNOWN_MODELS, find_upscaler
from emaki.workspace import Workspace

if TYPE_CHECKING:
    from emaki.jobs.store import Job

EXTRAS_KEY = "extras"  # the PNG text chunk A1111's postprocessing writes


def face_restorers_folder(workspace: Workspace) -> Path:
    return restorer_folders(workspace)[0]


def face_restorers(workspace: Workspace) -> list[dict[str, Any]]:
    """`/sdapi/v1/face-restorers` in A1111's shape (name, cmd_dir): the restorers a request can
    use now — GFPGAN when its file and the face detector's are there (CodeFormer never: see
    `emaki.faces.restorers`)."""
    files = find_face_files(workspace)
    if files.detector is None or "GFPGAN" not in files.restorers:
        return []
    return [{"name": "GFPGAN", "cmd_dir": str(files.restorers["GFPGAN"].parent)}]


def a1111_upscalers(engine: Engine) -> list[dict[str, Any]]:
    """`/sdapi/v1/upscalers` (A1111's `shared.sd_upscalers`): None, Lanczos, Nearest, then the
    model files sorted by name; the order the SD upscale script's `upscaler_index` counts in."""
    rows = engine.upscalers()
    builtins = [row for row in rows if row["path"] is None]
    models = sorted((row for row in rows if row["path"] is not None), key=lambda row: row["name"].lower())
    return [{"name": row["name"], "model_name": row["architecture"], "model_path": row["path"], "model_url": None,
             "scale": row["scale"] or 4} for row in builtins + models]


def upscaler_by_index(engine: Engine, choice: int | str) -> str:
    """The upscaler's name the SD upscale script's `upscaler_index` means (a name passes as it is)."""
    if isinstance(choice, str):
        return choice
    names = [row["name"] for row in a1111_upscalers(engine)]
    if not 0 <= choice < len(names):
        raise ParamsError(f"script_args: upscaler index {choice} is not in /sdapi/v1/upscalers "
                          f"(0-{len(names) - 1}: {', '.join(names)})")
    return names[choice]


def queue_sd_upscale(service: Service, fields: dict[str, Any], init: Image.Image, *, upscaler: str, scale: float,
                     overlap: int, keep: bool, overrides: dict[str, Any] | None = None, field: str = "upscaler") -> Job:
    """Check A1111's "SD upscale" script (its upscaler by `field`, the tile overlap, the enlarged
    size) before anything is kept, then queue it as one `sd-upscale` job on `init` with the
    img2img `fields` (width×height is the tile size)."""
    if upscaler != "None" and find_upscaler(upscaler, service.engine.workspace, field=field).kind == "latent":
        raise ParamsError(f"{field}: {upscaler!r} works on latents, in the hires fix only")
    check_overlap(overlap, fields.get("width") or DEFAULT_TILE_SIZE, fields.get("height") or DEFAULT_TILE_SIZE)
    enlarged = (int(init.width * scale), int(init.height * scale)) if upscaler != "None" else init.size
    if enlarged[0] * enlarged[1] > MAX_INPUT_PIXELS:
        raise ImageTooLarge(f"{field}: {init.width}x{init.height} times {format_number(scale)} is more than this "
                            "server makes (4096x4096)")
    params = service.prepare(fields, overrides=overrides, init=init)
    try:
        check_size_limits(params)  # the tile size, as any job's
    except EmakiError:
        remove_input(params.model_dump(), service.inputs)  # nothing is kept for a refused request
        raise
    script = {"upscaler": upscaler, "scale": scale, "overlap": overlap}
    return service.store.submit(params.model_dump() | {"sd_upscale": script}, keep=keep, kind="sd-upscale")


def realesrgan_models(workspace: Workspace) -> list[dict[str, Any]]:
    """`/sdapi/v1/realesrgan-models`: A1111's Real-ESRGAN entries; `path` is the file when it is
    in an upscaler folder (A1111 gives the download URL; emaki downloads nothing)."""
    files = {path.name.lower(): path for path in walk_files(workspace.folders("upscalers"), (".pth", ".safetensors"))}
    return [{"name": known.name, "path": str(files[known.file.lower()]) if known.file.lower() in files else None,
             "scale": known.scale} for known in KNOWN_MODELS if known.a1111_folder == "RealESRGAN"]


def _upscale_once(engine: Engine, image: Image.Image, upscaler: str, request: ExtrasRequest,
                  info: dict[str, str]) -> Image.Image:
    if request.resize_mode == 1:
        width, height = request.upscaling_resize_w, request.upscaling_resize_h
        scale = max(width / image.width, height / image.height)
        info["Postprocess upscale to"] = f"{width}x{height}"
    else:
        scale = request.upscaling_resize
        info["Postprocess upscale by"] = format_number(scale)
    if int(image.width * scale) * int(image.height * scale) > MAX_INPUT_PIXELS:
        raise ImageTooLarge(f"upscaling_resize: {image.width}x{image.height} times {format_number(scale)} is more "
                            "than this server makes (4096x4096)")
    result = engine.upscale(image, upscaler, scale)
    if request.resize_mode == 1 and request.upscaling_crop:
        cropped = Image.new("RGB", (width, height))
        cropped.paste(result, (width // 2 - result.width // 2, height // 2 - result.height // 2))
        result = cropped
        info["Postprocess crop to"] = f"{width}x{height}"
    return result


def check_extras(engine: Engine, request: ExtrasRequest) -> None:
    """Refuse what cannot run before any image is touched."""
    for field, restorer in (("gfpgan_visibility", "GFPGAN"), ("codeformer_visibility", "CodeFormer")):
        if getattr(request, field) > 0:
            engine.face_restoration.check(engine.workspace, restorer, field)
    for field in ("upscaler_1", "upscaler_2"):
        name = getattr(request, field)
        if name != "None":
            found = find_upscaler(name, engine.workspace, field=field)
            if found.kind == "latent":
                raise ParamsError(f"{field}: {name!r} works on latents, in the hires fix only")


def run_extras(engine: Engine, image: Image.Image, request: ExtrasRequest) -> tuple[Image.Image, str]:
    """The picture after A1111's upscale step, then GFPGAN (A1111's postprocessing order), and its
    infotext ("" when neither ran)."""
    info: dict[str, str] = {}
    picture = image.convert("RGB")
    result = picture if request.upscaler_1 == "None" else _upscale_step(engine, picture, request, info)
    if request.gfpgan_visibility > 0:  # A1111's `postprocessing_gfpgan.py`
        result = engine.restore_faces(result, "GFPGAN", request.gfpgan_visibility, field="gfpgan_visibility")
        info["GFPGAN visibility"] = format_number(round(request.gfpgan_visibility, 3))
    return result, ", ".join(f"{key}: {quote(value)}" for key, value in info.items())


def _upscale_step(engine: Engine, picture: Image.Image, request: ExtrasRequest, info: dict[str, str]) -> Image.Image:
    """A1111's `postprocessing_upscale.py`: upscaler 1, then upscaler 2 blended in."""
    result = _upscale_once(engine, picture, request.upscaler_1, request, info)
    info["Postprocess upscaler"] = request.upscaler_1
    if request.upscaler_2 != "None" and request.extras_upscaler_2_visibility > 0:
        second = _upscale_once(engine, picture, request.upscaler_2, request, info)
        if second.size != result.size:
            second = second.resize(result.size, Image.Resampling.LANCZOS)
        result = Image.blend(result, second, request.extras_upscaler_2_visibility)
        info["Postprocess upscaler 2"] = request.upscaler_2
    return result


def encode_extras_png(result: Image.Image, source: Image.Image, extras: str) -> str:
    """`result` as base64 PNG, with the source's text chunks (its generation parameters) and
    A1111's `extras` text."""
    info = PngInfo()
    for key, value in source.info.items():
        if isinstance(key, str) and isinstance(value, str) and key != EXTRAS_KEY:
            info.add_text(key, value)
    if extras:
        info.add_text(EXTRAS_KEY, extras)
    buffer = io.BytesIO()
    result.save(buffer, format="PNG", pnginfo=info)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def html_info(text: str) -> str:
    """A1111's `plaintext_to_html`."""
    return "<div><p>" + "<br>\n".join(html.escape(line) for line in text.split("\n")) + "</p></div>"
