"""`/sdapi/v1`: the A1111 web UI's API (v1.10.1 shapes, specs/FORMATS.md §8), so bots, editor
plugins and `webuiapi` scripts work unchanged. Routes for features emaki does not have
(interrogation, ...) are absent, not faked: they answer 404.

The training routes answer `{"info": ...}` as A1111 does, but an error is a 4xx (A1111 answers
200 with "... error: ..."): `{"detail": msg, "info": "<task> error: msg"}`, so clients that print
`info` still show it.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import os
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import torch
from fastapi import APIRouter, Body, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, ValidationError

from emaki.engine.output import png_info
from emaki.errors import EmakiError, ParamsError
from emaki.faces import check_restorer_name
from emaki.faces.restorers import refuse_unrunnable
from emaki.infotext import infotext_of, parse_infotext
from emaki.jobs.store import Job
from emaki.jobs.worker import HeldImage
from emaki.params import ImageTooLarge, check_input_size, params_error
from emaki.sampling import SAMPLERS, SCHEDULES
from emaki.server import training
from emaki.server.a1111_schema import (
    SD_UPSCALE,
    CreateEmbeddingRequest,
    CreateHypernetworkRequest,
    ExtrasBatchImagesRequest,
    ExtrasRequest,
    ExtrasSingleImageRequest,
    Img2ImgRequest,
    PngInfoRequest,
    TrainEmbeddingRequest,
    TrainHypernetworkRequest,
    TrainRequest,
    Txt2ImgRequest,
)
from emaki.server.catalog import text_width
from emaki.server.cmd_flags import a1111_cmd_flags
from emaki.server.extras import (
    a1111_upscalers,
    check_extras,
    encode_extras_png,
    face_restorers,
    html_info,
    queue_sd_upscale,
    realesrgan_models,
    run_extras,
    upscaler_by_index,
)
from emaki.server.service import Service, error_status, failed_job_status, remove_input
from emaki.server.xyz_script import XYZ_PLOT, grid_spec
from emaki.upscalers import LATENT_UPSCALERS
from emaki.version import __version__

router = APIRouter(prefix="/sdapi/v1", tags=["A1111-compatible"])


def _service(request: Request) -> Service:
    return request.app.state.service


def processed_info(job: Job, request: Txt2ImgRequest) -> str:
    """`Processed.js()`: the JSON *string* A1111 returns as `info` (an interrupted job's
    unfinished batch last, as its images are)."""
    result = job.result or {}
    unfinished = result.get("unfinished") or []
    if unfinished:
        result = result | {key: [*result.get(key, []), *(image[field] for image in unfinished)]
                           for key, field in (("seeds", "seed"), ("subseeds", "subseed"), ("infotexts", "infotext"))}
    return info_json(result, request)


def info_json(result: dict[str, Any], request: Txt2ImgRequest) -> str:
    """`Processed.js()` of a run's `result_summary`."""
    params = result.get("params") or {}
    seeds, subseeds = result.get("seeds", []), result.get("subseeds", [])
    info = {
        "prompt": params.get("prompt", request.prompt),
        "all_prompts": [params.get("prompt", request.prompt)] * len(seeds),
        "negative_prompt": params.get("negative_prompt", request.negative_prompt),
        "all_negative_prompts": [params.get("negative_prompt", request.negative_prompt)] * len(seeds),
        "seed": seeds[0] if seeds else params.get("seed", request.seed),
        "all_seeds": seeds,
        "subseed": subseeds[0] if subseeds else params.get("subseed", request.subseed),
        "all_subseeds": subseeds,
        "subseed_strength": params.get("subseed_strength", request.subseed_strength),
        "width": params.get("width", request.width),
        "height": params.get("height", request.height),
        "sampler_name": params.get("sampler_name"),
        "cfg_scale": params.get("cfg_scale", request.cfg_scale),
        "steps": params.get("steps", request.steps),
        "batch_size": params.get("batch_size", request.batch_size),
        "restore_faces": bool(params.get("restore_faces")),
        "face_restoration_model": "GFPGAN" if params.get("restore_faces") else None,
        "sd_model_name": result.get("model_name"),
        "sd_model_hash": result.get("model_hash"),
        "sd_vae_name": result.get("vae_name"),
        "sd_vae_hash": result.get("vae_hash"),
        "seed_resize_from_w": params.get("seed_resize_from_w", -1) or -1,
        "seed_resize_from_h": params.get("seed_resize_from_h", -1) or -1,
        "denoising_strength": (params.get("denoising_strength")
                               if params.get("init_image") or params.get("enable_hr") else None),
        "extra_generation_params": {},
        "index_of_first_image": 0,
        "infotexts": result.get("infotexts", []),
        "styles": request.styles or [],
        "job_timestamp": result.get("job_timestamp", ""),
        "clip_skip": params.get("clip_skip", 1),
        "is_using_inpainting_conditioning": False,
        "version": f"emaki {__version__}",
    }
    return json.dumps(info, ensure_ascii=False)


def encode_png(image: HeldImage) -> str:
    buffer = io.BytesIO()
    image.image.save(buffer, format="PNG", pnginfo=png_info(image.infotext))
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _reply_images(service: Service, job: Job, kept: bool, send: bool, count: int | None = None) -> list[str]:
    """The job's PNGs as base64 (the first `count`, when given): read back from the gallery, or
    taken from the worker's hold (which, for a kept job, holds only an interrupted batch as far
    as it got: never written, it comes last)."""
    held = service.worker.take_held(job.id)
    if not send:
        return []
    if kept:
        rows = service.store.images_of(job.id)[:count]
        saved = [base64.b64encode(Path(row["path"]).read_bytes()).decode("ascii") for row in rows]
        return saved + [encode_png(image) for image in held or []]
    return [encode_png(image) for image in (held or [])[:count]]


def check_supported(body: Txt2ImgRequest) -> None:
    """Refuse what emaki cannot do rather than ignore it (face restoration: a restorer other than
    GFPGAN named by the request's override_settings `face_restoration_model`; the files GFPGAN
    needs are checked with every other field by `Service.prepare`)."""
    if body.restore_faces:
        chosen = (body.override_settings or {}).get("face_restoration_model") or "GFPGAN"
        refuse_unrunnable(check_restorer_name(str(chosen), "restore_faces"), "restore_faces")
    unsupported = body.unsupported()
    if unsupported:
        raise HTTPException(422, f"not supported by emaki yet: {', '.join(unsupported)}")


async def _generate(body: Txt2ImgRequest, request: Request, init: Image.Image | None = None,
                    mask: Image.Image | None = None) -> dict[str, Any]:
    """Queue the request as a job, wait for it, answer as A1111 does."""
    service = _service(request)
    check_supported(body)
    keep = body.save_images and not body.do_not_save_samples
    if body.xyz_plot():
        return await _xyz_plot(body, request, keep, init, mask)

    def queue() -> Job:  # may hash a model file the first time: kept off the event loop
        params = service.prepare(body.generation_fields(), overrides=body.override_settings, init=init, mask=mask)
        return service.submit(params, keep=keep)

    job = await request.app.state.waiters.wait((await run_in_threadpool(queue)).id)
    if job.status == "failed":  # a full disk: 507; nothing to send back, nothing to hold
        service.worker.take_held(job.id)
        raise HTTPException(failed_job_status(job), job.error or "generation failed")
    images = await run_in_threadpool(_reply_images, service, job, keep, body.send_images)
    return {"images": images, "parameters": body.model_dump(), "info": processed_info(job, body)}


async def _xyz_plot(body: Txt2ImgRequest, request: Request, keep: bool, init: Image.Image | None,
                    mask: Image.Image | None) -> dict[str, Any]:
    """The "X/Y/Z plot" script: the grid checked and planned now (a bad axis: 422, a refused
    prompt in any cell: 400, before anything is queued), run as one queued `grid` job, answered
    as A1111 does: the grid first (then the sub-grids, then the cells with `include_lone_images`),
    `info.infotexts` alike. An interrupted grid answers with its finished cells' partial grid."""
    service = _service(request)

    def queue() -> Job:
        spec = grid_spec(body.script_args, img2img=isinstance(body, Img2ImgRequest))
        params = service.prepare(body.generation_fields(), overrides=body.override_settings, init=init, mask=mask)
        try:
            planned = service.plan_grid(params, spec)
        except EmakiError:
            remove_input(params.model_dump(), service.inputs)  # nothing is kept for a refused request
            raise
        return service.submit_grid(planned, spec, keep=keep)

    job = await request.app.state.waiters.wait((await run_in_threadpool(queue)).id)
    if job.status == "failed":
        service.worker.take_held(job.id)
        raise HTTPException(failed_job_status(job), job.error or "the X/Y/Z plot failed")
    result = job.result or {}
    shown = int(result.get("shown", 0))
    images = await run_in_threadpool(_reply_images, service, job, keep, body.send_images, shown)
    summary = result | {key: result.get(key, [])[:shown] for key in ("seeds", "subseeds", "infotexts")}
    return {"images": images, "parameters": body.model_dump(), "info": info_json(summary, body)}


@router.post("/txt2img")
async def txt2img(body: Txt2ImgRequest, request: Request) -> dict[str, Any]:
    return await _generate(body, request)


@router.post("/img2img")
async def img2img(body: Img2ImgRequest, request: Request) -> dict[str, Any]:
    if not body.init_images:
        raise HTTPException(422, "init_images: give one image (base64 or a data URL)")
    init = flattened(await run_in_threadpool(decode_image, body.init_images[0], "init_images"))
    if body.sd_upscale():
        reply = await _sd_upscale(body, request, init)
    else:
        mask = await run_in_threadpool(decode_image, body.mask, "mask") if body.mask else None
        reply = await _generate(body, request, init, mask)
    if not body.include_init_images:
        reply["parameters"] |= {"init_images": None, "mask": None}
    return reply


def flattened(image: Image.Image) -> Image.Image:
    """A1111 lays an init image with transparency on its background colour (white) before
    anything else: its alpha is never a mask on this API (the engine would read it as one)."""
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, image.convert("RGBA")).convert("RGB")
    return image


async def _sd_upscale(body: Img2ImgRequest, request: Request, init: Image.Image) -> dict[str, Any]:
    """The "SD upscale" script, checked now (its upscaler, the tile overlap), run as one queued
    `sd-upscale` job (progress: tile i of n; interrupt answers with the tiles finished so far),
    answered as A1111 does."""
    service = _service(request)
    check_supported(body)
    if body.mask:
        raise HTTPException(422, "mask: the SD upscale script redraws the whole picture; send no mask")
    overlap, choice, scale = body.sd_upscale_args()
    keep = body.save_images and not body.do_not_save_samples

    def queue() -> Job:
        upscaler = upscaler_by_index(service.engine, choice)
        return queue_sd_upscale(service, body.generation_fields(), init, upscaler=upscaler, scale=scale,
                                overlap=overlap, keep=keep, overrides=body.override_settings, field="script_args")

    job = await request.app.state.waiters.wait((await run_in_threadpool(queue)).id)
    if job.status == "failed":
        service.worker.take_held(job.id)
        raise HTTPException(failed_job_status(job), job.error or "SD upscale failed")
    images = await run_in_threadpool(_reply_images, service, job, keep, body.send_images)
    return {"images": images, "parameters": body.model_dump(), "info": processed_info(job, body)}


def decode_image(data: str, field: str = "image") -> Image.Image:
    """Raw base64 or a `data:image/...;base64,` URL (remote URLs are not fetched). The size the
    image declares is checked before its pixels are decoded (`check_input_size`: a small PNG can
    declare gigabytes); PIL bounds its text chunks."""
    if data.startswith(("http://", "https://")):
        raise ParamsError(f"{field}: images are not fetched from URLs by this server; send base64")
    if data.startswith("data:"):
        data = data.split(",", 1)[-1]
    try:
        image = Image.open(io.BytesIO(base64.b64decode(data, validate=False)))
    except Image.DecompressionBombError as e:
        raise ImageTooLarge(f"{field}: {e}") from None
    except (binascii.Error, UnidentifiedImageError, OSError, ValueError) as e:
        raise ParamsError(f"{field}: not a base64-encoded image ({e})") from None
    except Exception as e:  # noqa: BLE001  (PIL fails on damaged headers in many ways)
        raise ParamsError(f"{field}: not a readable image ({type(e).__name__}: {e})") from None
    check_input_size(image.width, image.height, field)
    try:
        image.load()
    except Exception as e:  # noqa: BLE001  (PIL fails on damaged files in many ways)
        raise ParamsError(f"{field}: not a readable image ({type(e).__name__}: {e})") from None
    return image


@router.post("/png-info")
def png_info_route(body: PngInfoRequest) -> dict[str, Any]:
    if not body.image:
        raise HTTPException(404, "Image not found")
    image = decode_image(body.image)
    text = infotext_of(image) or ""
    items = {k: v for k, v in image.info.items() if isinstance(v, str) and k != "parameters"}
    return {"info": text, "items": items, "parameters": parse_infotext(text) if text else {}}


@router.get("/progress")
async def progress(request: Request, skip_current_image: bool = False) -> dict[str, Any]:
    service = _service(request)
    snapshot = service.worker.progress()
    counts = service.store.counts()
    current_image = None if skip_current_image else snapshot.preview_base64()
    return {
        "progress": snapshot.fraction,
        "eta_relative": snapshot.eta,
        "state": {
            "skipped": service.worker.cancel.skip.is_set(),
            "interrupted": service.worker.cancel.interrupt.is_set(),
            "stopping_generation": False,
            "job": snapshot.job_id or "",
            # A grid counts its cells as A1111's X/Y/Z plot does (`state.job_count`).
            "job_count": snapshot.cells or counts.get("queued", 0) + counts.get("running", 0),
            "job_timestamp": "0",
            "job_no": snapshot.cell - 1 if snapshot.cells else snapshot.batch,
            "sampling_step": snapshot.step,
            "sampling_steps": snapshot.steps,
        },
        "current_image": current_image,
        "textinfo": snapshot.training.textinfo() if snapshot.training is not None else None,
    }


@router.post("/interrupt")
def interrupt(request: Request) -> dict[str, Any]:
    _service(request).worker.interrupt_job()
    return {}


@router.post("/skip")
def skip(request: Request) -> dict[str, Any]:
    service = _service(request)
    if service.worker.progress().job_id is not None:
        service.worker.cancel.skip.set()
    return {}


@router.get("/options")
def get_options(request: Request) -> dict[str, Any]:
    return _service(request).options_view()


@router.post("/options")
def set_options(body: dict[str, Any], request: Request) -> None:
    _service(request).set_options(body)


@router.get("/cmd-flags")
def cmd_flags(request: Request) -> dict[str, Any]:
    """A1111's flags with their defaults, the workspace's folders, then how this server runs."""
    settings = request.app.state.settings
    return a1111_cmd_flags(_service(request).engine.workspace) | settings.flags()


@router.get("/samplers")
def samplers() -> list[dict[str, Any]]:
    return [{"name": s.name, "aliases": list(s.aliases), "options": {k: str(v) for k, v in s.defaults.items()}}
            for s in SAMPLERS]


@router.get("/schedulers")
def schedulers() -> list[dict[str, Any]]:
    return [{"name": s.name, "label": s.label, "aliases": list(s.aliases) or None, "default_rho": s.default_rho,
             "need_inner_model": s.need_inner_model} for s in SCHEDULES]


@router.get("/sd-models")
def sd_models(request: Request) -> list[dict[str, Any]]:
    return [{"title": e.title, "model_name": e.model_name, "hash": e.hash, "sha256": e.sha256,
             "filename": e.filename, "config": None} for e in _service(request).catalog.checkpoints()]


@router.get("/sd-vae")
def sd_vae(request: Request) -> list[dict[str, Any]]:
    return [{"model_name": row["name"], "filename": row["path"]} for row in _service(request).catalog.inventory.vaes]


@router.get("/hypernetworks")
def hypernetworks(request: Request) -> list[dict[str, Any]]:
    return [{"name": row["name"], "path": row["path"]}
            for row in _service(request).catalog.inventory.rows("hypernetworks") if row["status"] == "loaded"]


@router.get("/loras")
def loras(request: Request) -> list[dict[str, Any]]:
    """A1111's Lora extension listing: file stem, alias (`ss_output_name`), path, and the
    safetensors metadata (JSON values parsed)."""
    return [{"name": row["name"], "alias": row["alias"], "path": row["path"], "metadata": row["metadata"]}
            for row in _service(request).catalog.loras()]


@router.get("/embeddings")
def embeddings(request: Request) -> dict[str, Any]:
    """Embeddings that fit the current checkpoint (`loaded`) and those that do not, with why."""
    service = _service(request)
    scan = service.catalog.libraries.embeddings(text_width(service.current_checkpoint().filename))
    loaded = {e.name: {"step": e.step, "sd_checkpoint": e.sd_checkpoint, "sd_checkpoint_name": e.sd_checkpoint_name,
                       "shape": e.width, "vectors": e.num_vectors} for e in scan.loaded.values()}
    skipped = {s.name: {"step": None, "sd_checkpoint": None, "sd_checkpoint_name": None, "shape": None,
                        "vectors": None, "reason": s.reason} for s in scan.skipped}
    return {"loaded": loaded, "skipped": skipped}


@router.post("/refresh-checkpoints")
@router.post("/refresh-embeddings")
@router.post("/refresh-vae")
@router.post("/refresh-loras")
def refresh(request: Request) -> None:
    """Walk the folders again; answers null, as A1111 does."""
    _service(request).catalog.refresh()


@router.get("/memory")
def memory() -> dict[str, Any]:
    """RAM of the machine and of this process (bytes); `cuda` says why there is none."""
    page = os.sysconf("SC_PAGE_SIZE")
    total = os.sysconf("SC_PHYS_PAGES") * page
    free = os.sysconf("SC_AVPHYS_PAGES") * page
    rss = int(Path("/proc/self/statm").read_text().split()[1]) * page if Path("/proc/self/statm").is_file() else None
    ram = {"free": free, "used": total - free, "total": total, "process": rss}
    cuda: dict[str, Any] = {"error": "no CUDA device"}
    if torch.cuda.is_available():
        free_gpu, total_gpu = torch.cuda.mem_get_info()
        cuda = {"system": {"free": free_gpu, "used": total_gpu - free_gpu, "total": total_gpu}}
    return {"ram": ram, "cuda": cuda}


@router.get("/scripts")
def scripts() -> dict[str, list[str]]:
    return {"txt2img": [XYZ_PLOT], "img2img": [SD_UPSCALE, XYZ_PLOT]}


# --- upscalers and extras ---


@router.get("/upscalers")
def upscalers(request: Request) -> list[dict[str, Any]]:
    return a1111_upscalers(_service(request).engine)


@router.get("/latent-upscale-modes")
def latent_upscale_modes() -> list[dict[str, Any]]:
    return [{"name": name} for name in LATENT_UPSCALERS]


@router.get("/realesrgan-models")
def realesrgan(request: Request) -> list[dict[str, Any]]:
    return realesrgan_models(_service(request).engine.workspace)


@router.get("/face-restorers")
def face_restorers_route(request: Request) -> list[dict[str, Any]]:
    return face_restorers(_service(request).engine.workspace)


def _extras(service: Service, body: ExtrasRequest, sources: list[tuple[str, str]]) -> tuple[list[str], str]:
    """Every (field, base64) image through the extras; the PNGs and the last one's infotext."""
    engine = service.engine
    check_extras(engine, body)
    pictures = [decode_image(data, field) for field, data in sources]  # all read before any is upscaled
    encoded, text = [], ""
    for picture in pictures:
        result, text = run_extras(engine, picture, body)
        encoded.append(encode_extras_png(result, picture, text))
    return encoded, text


@router.post("/extra-single-image")
async def extra_single_image(body: ExtrasSingleImageRequest, request: Request) -> dict[str, Any]:
    if not body.image:
        raise HTTPException(422, "image: give one image (base64 or a data URL)")
    images, text = await run_in_threadpool(_extras, _service(request), body, [("image", body.image)])
    return {"html_info": html_info(text), "image": images[0]}


@router.post("/extra-batch-images")
async def extra_batch_images(body: ExtrasBatchImagesRequest, request: Request) -> dict[str, Any]:
    if not body.imageList:
        raise HTTPException(422, "imageList: give at least one {data, name} image")
    sources = [(f"imageList[{i}]", item.data) for i, item in enumerate(body.imageList)]
    images, text = await run_in_threadpool(_extras, _service(request), body, sources)
    return {"html_info": html_info(text), "images": images}


@router.get("/script-info")
def script_info() -> list[Any]:
    return []


@router.get("/prompt-styles")
def prompt_styles(request: Request) -> list[dict[str, str]]:
    """The workspace's styles files (its `styles.csv`, then the A1111 install's), as A1111 lists them."""
    return [{"name": s.name, "prompt": s.prompt, "negative_prompt": s.negative_prompt}
            for s in _service(request).styles().values()]


@router.get("/extensions")
def extensions() -> list[Any]:
    return []



# --- training ---


def _body_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The OpenAPI request body of a route that validates `model` itself (to answer in A1111's
    shape when it does not fit)."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": model.model_json_schema()}}}}


def _renamed(message: str, renamed: dict[str, str]) -> str:
    """A message about `TrainingParams` fields, with the names the A1111 request used."""
    if not renamed:
        return message
    pattern = r"(?:^|(?<=parameter )|(?<=; ))(" + "|".join(map(re.escape, renamed)) + r")(?=:)"
    return re.sub(pattern, lambda m: renamed[m.group(1)], message)


def _refusal(task: str, status: int, error_type: str, message: str) -> JSONResponse:
    return JSONResponse({"error": error_type, "detail": message, "info": f"{task} error: {message}"},
                        status_code=status)


async def _answer(task: str, work: Callable[[], Awaitable[dict[str, Any] | JSONResponse]],
                  renamed: dict[str, str] | None = None) -> dict[str, Any] | JSONResponse:
    """`work()`'s answer, or its error as a 4xx in A1111's shape (policy refusals: 400)."""
    try:
        return await work()
    except ValidationError as e:
        return _refusal(task, 422, "ParamsError", str(params_error(e)))
    except EmakiError as e:
        return _refusal(task, error_status(e), type(e).__name__, _renamed(str(e), renamed or {}))


@router.post("/create/embedding", openapi_extra=_body_schema(CreateEmbeddingRequest))
async def create_embedding(request: Request, body: dict[str, Any] = Body(...)) -> Any:  # noqa: B008
    """A new embedding for the current checkpoint: `{"info": "create embedding filename: <path>"}`."""
    service = _service(request)

    async def work() -> dict[str, Any]:
        fields = CreateEmbeddingRequest.model_validate(body)
        path = await run_in_threadpool(training.create_embedding, service, fields.name, init_text=fields.init_text,
                                       num_vectors_per_token=fields.num_vectors_per_token,
                                       overwrite=fields.overwrite_old)
        service.catalog.invalidate()
        return {"info": f"create embedding filename: {path}"}

    return await _answer("create embedding", work)


@router.post("/create/hypernetwork", openapi_extra=_body_schema(CreateHypernetworkRequest))
async def create_hypernetwork(request: Request, body: dict[str, Any] = Body(...)) -> Any:  # noqa: B008
    """A new hypernetwork for the current checkpoint: `{"info": "create hypernetwork filename: <path>"}`."""
    service = _service(request)

    async def work() -> dict[str, Any]:
        fields = CreateHypernetworkRequest.model_validate(body)
        path = await run_in_threadpool(training.create_hypernetwork, service, fields.name,
                                       **fields.hypernetwork_options())
        service.catalog.invalidate()
        return {"info": f"create hypernetwork filename: {path}"}

    return await _answer("create hypernetwork", work)


async def _train(request: Request, body: dict[str, Any], model: type[TrainRequest], kind: str) -> Any:
    """Queue the training as a job and wait for its end (A1111 answers when training ends); the
    named file, when it exists, is trained on from its stored step."""
    service = _service(request)
    task = f"train {kind}"

    async def work() -> dict[str, Any] | JSONResponse:
        fields = model.model_validate(body)
        assert isinstance(fields, TrainEmbeddingRequest | TrainHypernetworkRequest)

        def queue() -> Job:
            params = training.prepare_training(service, fields.training_fields(), resume_existing=True)
            return training.submit_training(service, params)

        job = await request.app.state.waiters.wait((await run_in_threadpool(queue)).id)
        result = job.result or {}
        if job.status == "failed":
            return _refusal(task, failed_job_status(job), result.get("error_type") or "Error", job.error or "training failed")
        if job.status == "cancelled":
            return {"info": f"{task} complete: filename:  error: cancelled before it started"}
        return {"info": f"{task} complete: filename: {result.get('path', '')} error: None"}

    return await _answer(task, work, model.RENAMED)


@router.post("/train/embedding", openapi_extra=_body_schema(TrainEmbeddingRequest))
async def train_embedding(request: Request, body: dict[str, Any] = Body(...)) -> Any:  # noqa: B008
    """`{"info": "train embedding complete: filename: <path> error: None"}` once training ends
    (interrupted: saved where it got to)."""
    return await _train(request, body, TrainEmbeddingRequest, "embedding")


@router.post("/train/hypernetwork", openapi_extra=_body_schema(TrainHypernetworkRequest))
async def train_hypernetwork(request: Request, body: dict[str, Any] = Body(...)) -> Any:  # noqa: B008
    """`{"info": "train hypernetwork complete: filename: <path> error: None"}` once training ends."""
    return await _train(request, body, TrainHypernetworkRequest, "hypernetwork")
