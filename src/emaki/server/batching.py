"""`/api/batch`: `emaki batch` over HTTP. A batch (the lines of a batch file, as a list or as
JSON Lines text) is checked whole, then queued as one generation job per item; posting it again
under its name queues only what is not done, queued or running (`emaki.batch.record`).
Cancelling it stops its queued and running jobs and keeps the done ones, so a later post runs
what was cancelled.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.concurrency import run_in_threadpool

from emaki.batch.record import (
    BatchRecord,
    check_name,
    load_record,
    plan_items,
    progress,
    record_lock,
    save_record,
    summary_rows,
)
from emaki.batch.spec import MAX_LINE_CHARS, BatchItem, item_params, keyed_items
from emaki.batch.summary import summary_csv
from emaki.errors import EmakiError, ParamsError
from emaki.params import GenerationParams
from emaki.server.service import Service

router = APIRouter(prefix="/api", tags=["native"])
MAX_ITEMS = 10_000
MAX_BODY_BYTES = 16 * 1024 * 1024
BODY_FIELDS = ("name", "items", "jsonl")
BODY_SCHEMA = {"type": "object", "required": ["name"], "properties": {
    "name": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"},
    "items": {"type": "array", "maxItems": MAX_ITEMS, "items": GenerationParams.model_json_schema()},
    "jsonl": {"type": "string", "description": "one GenerationParams object a line (instead of items)"}}}

RawItem = tuple[int, str, Any]  # (line, where an error says it is, the decoded JSON)
CLAIM_WAIT_S = 10.0  # how long a cancel waits for a job just taken from the queue to become interruptible


def _service(request: Request) -> Service:
    return request.app.state.service


def _home(service: Service) -> Path:
    return service.engine.workspace.home


@router.post("/batch", status_code=202, openapi_extra={"requestBody": {"required": True, "content": {
    "application/json": {"schema": BODY_SCHEMA}}}})
async def submit_batch(request: Request) -> dict[str, Any]:
    """Queue a batch: `items` (or `jsonl`, the text of a batch file) checked first as `emaki batch`
    checks a file (a bad item: 422 naming `items[i].field`; a refused prompt: 400 naming the
    item; nothing queued), then one generation job per item not already done, queued or running
    under this `name`. Answers `queued` (the new `jobs`) and `skipped` (kept or duplicate) of `total`."""
    body = await _read_body(request)
    return await run_in_threadpool(queue_batch, _service(request), body)


@router.get("/batch/{name}")
def batch_progress(name: str, request: Request) -> dict[str, Any]:
    """Counts of the batch's items by status, items finished per second since it was last posted,
    and the seconds left at that rate (None until an item has finished)."""
    service = _service(request)
    return progress(_record(service, name), service.store.get)


@router.get("/batch/{name}/summary.csv")
def batch_summary(name: str, request: Request) -> Response:
    """The batch as `emaki batch`'s summary.csv: one row per item; `file` its gallery images
    (under the outputs folder)."""
    service = _service(request)
    outputs = service.engine.workspace.outputs

    def files_of(job_id: str) -> tuple[str, ...]:
        paths = [Path(row["path"]) for row in service.store.images_of(job_id)]
        return tuple(path.relative_to(outputs).as_posix() if path.is_relative_to(outputs) else path.name
                     for path in paths)

    rows = summary_rows(_record(service, name), service.store.get, files_of)
    return Response(summary_csv(rows), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{name}-summary.csv"'})


@router.post("/batch/{name}/cancel")
def cancel_batch(name: str, request: Request) -> dict[str, Any]:
    """Cancel the batch's queued jobs and interrupt its running ones (between steps); the done
    ones stay, and posting the batch again queues what was cancelled. Answers the batch's
    progress, with `stopped`: how many jobs this cancelled or interrupted."""
    service = _service(request)
    _record(service, name)  # 404 before the lock (which makes the batch's folder)
    with record_lock(_home(service), name):  # not while a post of it queues jobs
        record = _record(service, name)
        stopped = stop_jobs(service, [entry.job for entry in record.items if entry.job])
    return progress(record, service.store.get) | {"stopped": stopped}


def stop_jobs(service: Service, job_ids: list[str]) -> int:
    """Cancel the queued jobs of `job_ids`, then interrupt the running ones; how many it stopped.
    The queued ones go first: each job interrupted first would free a worker to start the next."""
    running = []
    stopped = 0
    for job_id in job_ids:
        job = service.store.get(job_id)
        if job is None or job.status not in ("queued", "running"):
            continue
        if job.status == "queued" and service.store.cancel(job_id):
            stopped += 1
        else:  # running, or taken by a worker since it was read
            running.append(job_id)
    deadline = time.monotonic() + CLAIM_WAIT_S
    while running:
        # A job the worker has just taken is `running` in the store a moment before it can be
        # interrupted: ask again until it can be, or it ended.
        waiting = []
        for job_id in running:
            if service.worker.interrupt_job(job_id):
                stopped += 1
            elif (job := service.store.get(job_id)) is not None and job.status == "running":
                waiting.append(job_id)
        if waiting and time.monotonic() > deadline:
            raise HTTPException(503, f"jobs {', '.join(waiting)} are running but could not be interrupted "
                                     f"within {CLAIM_WAIT_S:.0f} s; cancel the batch again")
        running = waiting
        if running:
            time.sleep(0.02)
    return stopped


def _record(service: Service, name: str) -> BatchRecord:
    record = load_record(_home(service), check_name(name))
    if record is None:
        raise HTTPException(404, f"no batch named {name!r}")
    return record


async def _read_body(request: Request) -> Any:
    """The JSON body, refused (413) past `MAX_BODY_BYTES` before it is all read."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise HTTPException(413, f"a batch body is at most {MAX_BODY_BYTES} bytes, this one {declared}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise HTTPException(413, f"a batch body is at most {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    try:
        return json.loads(b"".join(chunks))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ParamsError(f"body: not valid JSON ({e})") from None


def raw_items(body: Any) -> tuple[str, list[RawItem]]:
    """The batch's name and its items, decoded but not yet checked."""
    if not isinstance(body, dict):
        raise ParamsError(f"body: expected a JSON object with name and items (or jsonl), got {type(body).__name__}")
    unknown = sorted(set(body) - set(BODY_FIELDS))
    if unknown:
        raise ParamsError(f"{unknown[0]}: unknown field (expected name, and items or jsonl)")
    name = check_name(body.get("name"))
    if ("items" in body) == ("jsonl" in body):
        raise ParamsError("items: send the batch as items (a list) or as jsonl (text), one of them")
    if "items" in body:
        items = body["items"]
        if not isinstance(items, list):
            raise ParamsError(f"items: expected a list of generation parameters, got {type(items).__name__}")
        raw = [(index + 1, f"items[{index}]", fields) for index, fields in enumerate(items)]
    else:
        raw = jsonl_items(body["jsonl"])
    if not raw:
        raise ParamsError("items: the batch holds no items")
    if len(raw) > MAX_ITEMS:
        raise ParamsError(f"items: {len(raw):,} items, more than a batch holds ({MAX_ITEMS:,})")
    return name, raw


def jsonl_items(text: Any) -> list[RawItem]:
    """The non-blank lines of a batch file's text, each decoded (an error names `jsonl:line`)."""
    if not isinstance(text, str):
        raise ParamsError(f"jsonl: expected the text of a batch file, got {type(text).__name__}")
    raw: list[RawItem] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if len(line) > MAX_LINE_CHARS:
            raise ParamsError(f"jsonl:{number}: the line is {len(line):,} characters, more than {MAX_LINE_CHARS:,}")
        if not line.strip():
            continue
        try:
            raw.append((number, f"jsonl:{number}", json.loads(line)))
        except json.JSONDecodeError as e:
            raise ParamsError(f"jsonl:{number}: not valid JSON ({e.msg} at column {e.colno})") from None
        if len(raw) > MAX_ITEMS:
            break  # raw_items refuses it; the rest need not be decoded
    return raw


def prepared_params(service: Service, fields: dict[str, Any], item: BatchItem, where: str) -> GenerationParams:
    """The item's job params: its fields, with the seeds its key drew, completed and judged as
    `/api/jobs` does (names looked up, the prompt policy); an error names the item."""
    for image_field in ("init_image", "mask"):
        if fields.get(image_field):
            raise ParamsError(f"{where}.{image_field}: a batch item cannot carry an image (queue img2img "
                              "through /api/jobs)")
    try:
        return service.prepare(fields | {"seed": item.params.seed, "subseed": item.params.subseed})
    except EmakiError as e:
        raise _naming(e, where) from None


def _naming(error: EmakiError, where: str) -> EmakiError:
    """`error` of the same class (so the same HTTP status), its message prefixed with `where`."""
    named = type(error).__new__(type(error))
    named.args = (f"{where}: {error}",)
    return named


def queue_batch(service: Service, body: Any) -> dict[str, Any]:
    """Check every item, then queue those not already done, queued or running (module docstring)."""
    name, raw = raw_items(body)
    items = keyed_items([(line, item_params(fields, where)) for line, where, fields in raw])
    params = [prepared_params(service, fields, item, where) for (_, where, fields), item in zip(raw, items)]
    home, now = _home(service), time.time()
    with record_lock(home, name):
        previous = load_record(home, name)
        planned = plan_items(previous, items, service.store.get)
        record = BatchRecord(name, previous.created if previous else now, now, planned)
        queued: list[str] = []
        try:
            for entry, job_params in zip(planned, params):
                if entry.job is None and entry.duplicate_of is None:
                    entry.job = service.submit(job_params).id
                    queued.append(entry.job)
        finally:  # what was queued is recorded, also when the store stops taking jobs midway
            save_record(home, record)
    return {"name": name, "queued": len(queued), "skipped": len(planned) - len(queued), "total": len(planned),
            "jobs": queued}
