"""`/api`: emaki's own HTTP API. Jobs (generations, and training runs through `/api/train`) are
queued (they survive a restart) and watched through server-sent events with step previews and,
for training, the loss series; finished images land in a searchable gallery.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Body, HTTPException, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, StreamingResponse
from PIL import Image
from pydantic import Field

from emaki.engine.networks import NETWORK_KINDS
from emaki.errors import ParamsError
from emaki.infotext import infotext_of, parse_infotext
from emaki.infotext_codec import params_from_fields
from emaki.jobs.store import FINISHED, Job
from emaki.models.tokenizer import load_clip_tokenizer
from emaki.networks.hypernetworks import ACTIVATIONS
from emaki.params import MAX_PROMPT_LENGTH, CheckedModel, GenerationParams, speed_preset
from emaki.prompts import count_tokens
from emaki.prompts.styles import Style, delete_style, save_style
from emaki.prompts.tag_list import load_tags, search_tags
from emaki.server import training
from emaki.server.a1111 import decode_image
from emaki.server.a1111_schema import ExtrasRequest, PngInfoRequest
from emaki.server.changes import ChangeBell, Versions
from emaki.server.extras import check_extras, encode_extras_png, queue_sd_upscale, run_extras
from emaki.server.options import options_schema
from emaki.server.service import Service, remove_input
from emaki.training.params import DEFAULT_LEARN_RATES, MAX_VECTORS, TrainingParams
from emaki.training.templates import TEMPLATE_NAMES
from emaki.xyz.listing import axis_rows
from emaki.xyz.spec import GridSpec

router = APIRouter(prefix="/api", tags=["native"])
KEEPALIVE_SECONDS = 15.0  # an idle event stream sends a comment this often (proxies, dead clients)
KEEPALIVE = ": keep-alive\n\n"


def _service(request: Request) -> Service:
    return request.app.state.service


class JobRequest(GenerationParams):
    """A generation (model, VAE and hypernetwork by name, as `/api/models` lists them; for
    img2img, `init_image` is the image itself, base64 or a data URL, and so is an inpainting
    `mask`) and whether to keep its images in the gallery."""

    save: bool = True
    speed: str | None = Field(None, description="A speed preset, as `emaki generate --speed`: exact or fast (NGMS, "
                              "T-GATE and token merging; docs/performance.md); the fields this request sets win")


def job_view(service: Service, job: Job) -> dict[str, Any]:
    view = job.public()
    view["images"] = [image_view(row) for row in service.store.images_of(job.id)]
    return view


def image_view(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"], "job_id": row["job_id"], "url": f"/api/images/{row['id']}", "seed": row["seed"],
        "prompt": row["prompt"], "negative_prompt": row["negative_prompt"], "model": row["model"],
        "width": row["width"], "height": row["height"], "created": row["created"], "infotext": row["infotext"],
    }


def params_view(infotext: str) -> dict[str, Any]:
    """Parameters of an infotext as `GenerationParams` fields (what the page puts back in its form)."""
    fields = parse_infotext(infotext)
    params = params_from_fields(fields)
    return {"infotext": infotext, "fields": fields, "params": params.model_dump()}


@router.post("/jobs", status_code=202)
def submit_job(body: JobRequest, request: Request) -> dict[str, Any]:
    service = _service(request)
    fields = body.model_dump(exclude_unset=True)
    save = fields.pop("save", True)
    encoded, encoded_mask = fields.pop("init_image", None), fields.pop("mask", None)
    init = decode_image(encoded, "init_image") if encoded else None
    mask = decode_image(encoded_mask, "mask") if encoded_mask else None
    job = service.submit(service.prepare(fields, init=init, mask=mask), keep=save)
    if not save:  # no route returns its images: the worker need not hold them
        request.app.state.uncollected.add(job.id)
    return job_view(service, job)


class GridRequest(GridSpec):
    """An X/Y/Z plot: `params` are a generation's fields (as `/api/jobs` takes them: model, VAE
    by name; `init_image` and `mask` the images themselves), the axes and options are
    `GridSpec`'s, `save` whether its images go to the gallery."""

    params: dict[str, Any] = Field(default_factory=dict, description="GenerationParams fields, and `speed` (a preset, "
                                   "as `/api/jobs` takes it)")
    save: bool = True

    def spec(self) -> GridSpec:
        return GridSpec.create(**{name: getattr(self, name) for name in GridSpec.model_fields})


@router.post("/grid", status_code=202)
def submit_grid(body: GridRequest, request: Request) -> dict[str, Any]:
    """Queue an X/Y/Z plot as one `grid` job, checked first: an unknown axis or a bad value is
    422 naming it, a refused prompt in any cell 400, before anything is queued. Watch it like any
    job: its progress says which cell of how many (`cell`, `cells`); its images are the grid
    first, then every cell's; its `result.infotexts` likewise."""
    service = _service(request)
    spec = body.spec()
    fields = dict(body.params)
    encoded, encoded_mask = fields.pop("init_image", None), fields.pop("mask", None)
    init = decode_image(encoded, "params.init_image") if encoded else None
    mask = decode_image(encoded_mask, "params.mask") if encoded_mask else None
    params = service.prepare(fields, init=init, mask=mask)
    try:
        planned = service.plan_grid(params, spec)
    except Exception:
        remove_input(params.model_dump(), service.inputs)  # nothing is kept for a refused request
        raise
    job = service.submit_grid(planned, spec, keep=body.save)
    if not body.save:  # no route returns its images: the worker need not hold them
        request.app.state.uncollected.add(job.id)
    return job_view(service, job)


@router.post("/train", status_code=202,
             openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                 "schema": TrainingParams.model_json_schema()}}}})
def submit_training(request: Request, body: dict[str, Any] = Body(...)) -> dict[str, Any]:  # noqa: B008
    """Queue a training run (`TrainingParams` fields; `model` by name as `/api/models` lists it,
    the current checkpoint when none; `data` a folder on the server; `template` a shipped
    template; `log_directory` under the server's home). Watch it like any job: its events
    carry `training` with the loss series; its `result` names the trained file."""
    service = _service(request)
    job = training.submit_training(service, training.prepare_training(service, body))
    return job_view(service, job)


class StyleRequest(CheckedModel):
    """A style as the page's editor saves it (A1111's `styles.csv` row; `{prompt}` marks where
    the prompt goes)."""

    prompt: str = Field("", max_length=MAX_PROMPT_LENGTH)
    negative_prompt: str = Field("", max_length=MAX_PROMPT_LENGTH)


def style_view(style: Style) -> dict[str, str]:
    return {"name": style.name, "prompt": style.prompt, "negative_prompt": style.negative_prompt}


@router.get("/styles")
def list_styles(request: Request) -> list[dict[str, str]]:
    """The workspace's styles (its own `styles.csv` first, then the A1111 install's)."""
    return [style_view(style) for style in _service(request).styles().values()]


@router.get("/styles/{name}")
def get_style(name: str, request: Request) -> dict[str, str]:
    style = _service(request).styles().get(name)
    if style is None:
        raise HTTPException(404, f"no style named {name!r}")
    return style_view(style)


@router.put("/styles/{name}")
def put_style(name: str, body: StyleRequest, request: Request) -> dict[str, str]:
    """Add the style to the workspace's `styles.csv`, or replace the one of that name there."""
    service = _service(request)
    with service.styles_lock:
        saved = save_style(service.engine.workspace.styles_file,
                           Style(name, body.prompt, body.negative_prompt))
    return style_view(saved)


@router.delete("/styles/{name}", status_code=204)
def remove_style(name: str, request: Request) -> Response:
    """Remove the style from the workspace's `styles.csv` (an A1111 install's file is only read)."""
    service = _service(request)
    path = service.engine.workspace.styles_file
    with service.styles_lock:
        if name not in {s.name for s in service.styles().values() if s.path == path}:
            raise HTTPException(404, f"{path}: no style named {name!r}")
        delete_style(path, name)
    return Response(status_code=204)


@router.get("/train/options")
def training_options() -> dict[str, Any]:
    """What the Train form offers: the shipped templates, each kind's default learning rate, the
    hypernetwork activations."""
    return {"templates": list(TEMPLATE_NAMES), "learn_rates": DEFAULT_LEARN_RATES, "max_vectors": MAX_VECTORS,
            "activations": list(ACTIVATIONS)}


@router.get("/speed/{name}")
def speed_view(name: str, steps: int = Query(20, ge=1, le=1000)) -> dict[str, Any]:
    """The fields the speed preset `name` (exact, fast) sets for a run of `steps` steps, as
    `emaki generate --speed` sets them (the page's Speed menu fills its boxes with them)."""
    return speed_preset(name, steps)


@router.get("/options/schema")
def options_schema_view() -> list[dict[str, Any]]:
    """Every `/sdapi/v1/options` setting with its type, default, A1111 section and choices (the
    page's Settings editor); read-only."""
    return options_schema()


@router.get("/jobs")
def list_jobs(request: Request, status: str | None = None, limit: int = Query(100, ge=1, le=1000)) -> list[dict]:
    service = _service(request)
    return [job_view(service, job) for job in service.store.jobs(status, limit)]


def _job_or_404(service: Service, job_id: str) -> Job:
    job = service.store.get(job_id)
    if job is None:
        raise HTTPException(404, f"no job {job_id!r}")
    return job


@router.get("/jobs/{job_id}")
def get_job(job_id: str, request: Request) -> dict[str, Any]:
    service = _service(request)
    return job_view(service, _job_or_404(service, job_id))


@router.post("/jobs/{job_id}/cancel")
def cancel_job(job_id: str, request: Request) -> dict[str, Any]:
    """A queued job is cancelled; a running one is interrupted between steps."""
    service = _service(request)
    job = _job_or_404(service, job_id)
    if job.status in FINISHED:
        raise HTTPException(409, f"job {job_id} has already ended ({job.status})")
    if not service.store.cancel(job_id):
        service.worker.interrupt_job(job_id)
    return job_view(service, _job_or_404(service, job_id))


def _progress_event(service: Service, job_id: str | None) -> dict[str, Any] | None:
    """The running job's progress (`job_id`'s, else the longest-running job's; a training job's adds `training`: step, loss, the loss series
    as [[step, loss], ...], the latest preview as base64 PNG)."""
    snapshot = service.worker.progress(job_id)  # with several slots, each job has its own
    if snapshot.job_id is None or not snapshot.steps or (job_id is not None and snapshot.job_id != job_id):
        return None  # idle, another job, or no step taken yet
    encoded = snapshot.preview_base64()
    preview = "data:image/png;base64," + encoded if encoded else None
    event = {"job_id": snapshot.job_id, "kind": "generate", "batch": snapshot.batch, "batches": snapshot.batches,
             "step": snapshot.step, "steps": snapshot.steps, "progress": snapshot.fraction, "eta": snapshot.eta,
             "preview": preview}
    if snapshot.training is not None:
        event |= {"kind": "train", "training": snapshot.training.as_json()}
    if snapshot.file_job is not None:  # a merge or LoRA extraction: bytes (layers) done of the total
        event["kind"] = snapshot.file_job
    if snapshot.cells:  # a grid: which cell of how many (1-based), and its axis labels
        event |= {"kind": "grid", "cell": snapshot.cell, "cells": snapshot.cells,
                  "cell_labels": list(snapshot.cell_labels)}
    return event


@router.get("/jobs/{job_id}/progress")
def job_progress(job_id: str, request: Request) -> dict[str, Any] | None:
    """The job's latest progress event (what `/events` streams), or null when it is not running:
    for clients that poll (a browser cannot send credentials with an event stream)."""
    service = _service(request)
    _job_or_404(service, job_id)
    return _progress_event(service, job_id)


def _sse(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


def _event_stream(stream: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(stream, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


@router.get("/jobs/{job_id}/events")
async def job_events(job_id: str, request: Request) -> StreamingResponse:
    """Server-sent events: `progress` (step, preview as a data URL) until the job ends, then
    one event named after how it ended (`done`, `failed`, `cancelled`, `interrupted`). The
    stream sleeps until something changes (no polling); it ends when the server stops."""
    service = _service(request)
    _job_or_404(service, job_id)
    bell: ChangeBell = request.app.state.changes

    async def stream() -> AsyncIterator[str]:
        with request.app.state.waiters.watch(job_id) as ended:
            job = service.store.get(job_id)  # read after watching: an end in between is not missed
            assert job is not None
            last: tuple[Any, ...] | None = None
            while job.status not in FINISHED:
                seen = bell.versions  # before looking: a change while we look wakes the wait below
                event = _progress_event(service, job_id)
                key = (event.get("cell"), event["batch"], event["step"]) if event is not None else None
                if event is not None and key != last:
                    last = key
                    yield _sse("progress", event)
                elif event is None and last is None:
                    yield _sse("queued", {"job_id": job_id, "position": _position(service, job)})
                    last = ()
                if not await bell.changed(seen, KEEPALIVE_SECONDS):
                    yield KEEPALIVE
                if bell.closed:
                    return
                if ended.is_set():
                    job = service.store.get(job_id) or job
                    ended.clear()
            yield _sse(job.status, job_view(service, job))

    return _event_stream(stream())


def _position(service: Service, job: Job) -> int:
    return sum(1 for queued in service.store.jobs("queued", 10_000) if queued.seq < job.seq)


@router.get("/events")
async def all_events(request: Request) -> StreamingResponse:
    """Server-sent events for the whole server: `progress` of whichever job runs, `queue`
    counts when they change, and `finished` with each job that ends. The database is read only
    when the queue changed; the stream sleeps in between and ends when the server stops."""
    service = _service(request)
    bell: ChangeBell = request.app.state.changes

    async def stream() -> AsyncIterator[str]:
        last_progress, last_counts, finished_after = None, None, time.time()
        read: Versions | None = None
        while not bell.closed:
            seen = bell.versions  # before looking: a change while we look wakes the wait below
            if read is None or seen.jobs != read.jobs:
                counts = service.store.counts()
                if counts != last_counts:
                    last_counts = counts
                    yield _sse("queue", counts)
                recent = service.store.jobs(None, 20)
                for job in reversed(recent):
                    if job.finished and job.finished > finished_after:
                        yield _sse("finished", job_view(service, job))
                finished_after = max([finished_after] + [job.finished or 0 for job in recent])
            read = seen
            event = _progress_event(service, None)
            key = event and (event["job_id"], event.get("cell"), event["batch"], event["step"])
            if key != last_progress:
                last_progress = key
                if event is not None:
                    yield _sse("progress", event)
            if not await bell.changed(seen, KEEPALIVE_SECONDS):
                yield KEEPALIVE

    return _event_stream(stream())


@router.get("/gallery")
def gallery(request: Request, q: str | None = Query(None, max_length=1000), model: str | None = None, since: float | None = None,
            until: float | None = None, limit: int = Query(50, ge=1, le=500),
            offset: int = Query(0, ge=0)) -> list[dict[str, Any]]:
    """Newest first. `q` searches prompt, negative prompt, model and infotext (any case);
    `since`/`until` are Unix times."""
    rows = _service(request).store.gallery(text=q, model=model, since=since, until=until, limit=limit,
                                           offset=offset)
    return [image_view(row) for row in rows]


def _image_or_404(service: Service, image_id: int) -> dict[str, Any]:
    row = service.store.image(image_id)
    if row is None or not Path(row["path"]).is_file():
        raise HTTPException(404, f"no image {image_id}")
    return row


def _thumbnail(path: str, size: int) -> bytes:
    """The image shrunk to fit `size`×`size` (never enlarged), as a JPEG."""
    with Image.open(path) as image:
        image.thumbnail((size, size))
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


@router.get("/images/{image_id}", response_model=None)
def get_image(image_id: int, request: Request,
              thumb: int | None = Query(None, ge=16, le=1024, description="a thumbnail this many pixels at most")
              ) -> FileResponse | Response:
    """The PNG (with its infotext); with `thumb`, a small JPEG for the gallery (ids are never
    reused, so a browser may keep it)."""
    row = _image_or_404(_service(request), image_id)
    if thumb is not None:
        return Response(_thumbnail(row["path"], thumb), media_type="image/jpeg",
                        headers={"Cache-Control": "private, max-age=86400"})
    return FileResponse(row["path"], media_type="image/png", filename=Path(row["path"]).name)


@router.delete("/images/{image_id}", status_code=204)
def delete_image(image_id: int, request: Request) -> Response:
    """Remove the image from the gallery and its file from the disk."""
    row = _service(request).store.delete_image(image_id)
    if row is None:
        raise HTTPException(404, f"no image {image_id}")
    Path(row["path"]).unlink(missing_ok=True)  # the row went first: no gallery row points at a missing file
    return Response(status_code=204)


@router.get("/images/{image_id}/params")
def get_image_params(image_id: int, request: Request) -> dict[str, Any]:
    row = _image_or_404(_service(request), image_id)
    return params_view(row["infotext"])


@router.get("/tags")
def tags(request: Request, q: str = Query("", max_length=200),
         limit: int = Query(20, ge=1, le=1000)) -> list[dict[str, Any]]:
    """Prompt tags for autocomplete (the shipped danbooru list and the workspace's `tags/*.csv`):
    those whose name or an alias starts with `q` (a space matches `_`), most used first."""
    found = search_tags(load_tags(_service(request).engine.workspace), q, limit)
    return [{"tag": t.tag, "category": t.category, "count": t.count, "aliases": list(t.aliases)} for t in found]


@router.get("/grid/axes")
def grid_axes(request: Request) -> list[dict[str, Any]]:
    """The axes `/api/grid` takes: `name` (and `label`), `kind` ("number", "text" or "choice"),
    `choices` for a choice (this workspace's samplers, checkpoints, VAEs, styles, ...), `type`,
    `aliases`, `mode` (txt2img, img2img or both) — `emaki.xyz.listing.axis_rows`."""
    return axis_rows(_service(request).engine.workspace)


@router.post("/png-info")
def png_params(body: PngInfoRequest) -> dict[str, Any]:
    """The parameters stored in an image (A1111, NovelAI or emaki), as form fields."""
    text = infotext_of(decode_image(body.image))
    if not text:
        raise HTTPException(404, "this image carries no generation parameters")
    return params_view(text)


class TokensRequest(CheckedModel):
    prompt: str = Field("", max_length=MAX_PROMPT_LENGTH)
    negative: bool = False
    steps: int = Field(20, ge=1, le=1000)  # a generation's bound: prompt schedules have a variant per step


@router.post("/tokens")
def tokens(body: TokensRequest) -> dict[str, Any]:
    """The live token counter: tokens used, the limit, and where each 75-token chunk ends."""
    count = count_tokens(body.prompt, load_clip_tokenizer(), steps=body.steps, negative=body.negative)
    return {"tokens": count.tokens, "limit": count.limit, "summary": count.summary(),
            "chunks": [{"index": c.index, "tokens": c.tokens, "text": c.text} for c in count.chunks]}


@router.get("/models")
def models(request: Request) -> dict[str, Any]:
    service = _service(request)
    inventory = service.catalog.inventory
    return {
        "current": service.current_checkpoint().title,
        "checkpoints": [{"title": e.title, "name": e.model_name, "hash": e.hash}
                        for e in service.catalog.checkpoints()],
        "vaes": [row["name"] for row in inventory.vaes],
        **{kind.folder: [row["name"] for row in inventory.rows(kind.folder) if row["status"] == "loaded"]
           for kind in NETWORK_KINDS},
    }


@router.get("/loras")
def loras(request: Request) -> list[dict[str, Any]]:
    """The LoRAs a prompt can use (what the page's picker lists): `<lora:ALIAS:1>` selects one;
    `trigger_words` are its most frequent training tags; `embeddings` those bundled in it."""
    return [{"name": row["name"], "alias": row["alias"], "kind": row["kind"], "rank": row["rank"],
             "base_model": row["base_model"] or row["sd_version"] or None, "trigger_words": row["trigger_words"],
             "embeddings": row["embeddings"], "hash": row["hash"]}
            for row in _service(request).catalog.loras()]


@router.get("/upscalers")
def upscalers(request: Request) -> list[dict[str, Any]]:
    """What `/api/upscale` takes: None, Lanczos, Nearest, then the model files in the upscaler
    folders (name, kind, scale, architecture; `reason` when a file cannot be used)."""
    return _service(request).engine.upscalers()


class UpscaleRequest(CheckedModel):
    image: str = Field(..., description="the picture, base64 or a data URL")
    upscaler: str = "Lanczos"
    scale: float = Field(2.0, ge=1.0, le=8.0)
    gfpgan_visibility: float = Field(0.0, ge=0.0, le=1.0, description="GFPGAN after the upscale (A1111's extras)")


def _upscale(service: Service, body: UpscaleRequest) -> dict[str, Any]:
    if body.upscaler == "None" and body.gfpgan_visibility == 0:
        raise ParamsError("upscaler: None with gfpgan_visibility 0 leaves the picture as it is; "
                          "pick an upscaler or a GFPGAN visibility above 0")
    extras = ExtrasRequest(upscaler_1=body.upscaler, upscaling_resize=body.scale,
                           gfpgan_visibility=body.gfpgan_visibility)
    check_extras(service.engine, extras)
    picture = decode_image(body.image, "image")
    result, text = run_extras(service.engine, picture, extras)
    return {"image": "data:image/png;base64," + encode_extras_png(result, picture, text),
            "width": result.width, "height": result.height, "infotext": text}


@router.post("/upscale")
async def upscale(body: UpscaleRequest, request: Request) -> dict[str, Any]:
    """The picture upscaled now (the page's Extras panel), then its faces restored when
    `gfpgan_visibility` is above 0, as a PNG data URL carrying A1111's `extras` text; it waits
    for a running generation to leave the model."""
    return await run_in_threadpool(_upscale, _service(request), body)


class SDUpscaleRequest(CheckedModel):
    """A1111's "SD upscale" script: `params` are img2img fields (as `/api/jobs` takes them;
    `init_image` the picture itself, width×height the tile size), enlarged by `scale` with
    `upscaler` ("None": not enlarged), redrawn in tiles overlapping by `overlap`."""

    params: dict[str, Any] = Field(default_factory=dict, description="GenerationParams fields, and `speed` (a preset, "
                                   "as `/api/jobs` takes it)")
    upscaler: str = "None"
    scale: float = Field(2.0, ge=1.0, le=8.0)
    overlap: int = Field(64, ge=0, le=2048)
    save: bool = True


@router.post("/sd-upscale", status_code=202)
def submit_sd_upscale(body: SDUpscaleRequest, request: Request) -> dict[str, Any]:
    """Queue the SD upscale script as one `sd-upscale` job, checked first (the upscaler, the
    overlap, the enlarged size: 422). Watch it like any job: its progress counts the tiles as
    batches; interrupted, it keeps the picture with the tiles finished."""
    service = _service(request)
    fields = dict(body.params)
    encoded = fields.pop("init_image", None)
    if not encoded:
        raise ParamsError("params.init_image: the SD upscale script needs the picture to enlarge")
    if fields.get("mask"):
        raise ParamsError("params.mask: the SD upscale script redraws the whole picture; send no mask")
    init = decode_image(encoded, "params.init_image")
    job = queue_sd_upscale(service, fields, init, upscaler=body.upscaler, scale=body.scale, overlap=body.overlap,
                           keep=body.save)
    if not body.save:  # no route returns its images: the worker need not hold them
        request.app.state.uncollected.add(job.id)
    return job_view(service, job)


@router.get("/health")
def health(request: Request, response: Response) -> dict[str, Any]:
    """`status` "ok"; or "degraded", HTTP 503, with `faults`: why jobs cannot run or be recorded
    now (a full disk, a job store that cannot write, a stopped worker). A fault clears once a
    job is written again."""
    service = _service(request)
    faults = service.worker.faults()
    if faults:
        response.status_code = 503
    return {"ok": not faults, "status": "degraded" if faults else "ok", "faults": faults,
            "queue": service.store.counts()}
