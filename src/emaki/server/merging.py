"""`/api/merge`, `/api/lora/extract` and `/api/lineage`: checkpoint merges (LoRAs baked in), LoRA
extraction and lineage traces as queued jobs (`emaki.jobs.file_jobs`), watched like any job
(`/api/jobs/{id}/events`: progress is bytes, or layers, done of the total); a finished merge's or
extraction's `result` names the new model, which the listings then show (`/api/models`,
`/sdapi/v1/sd-models`, `/api/loras`); a lineage's holds the estimate per block (`emaki lineage
--json`) and its `summary` lines.

Models and LoRAs are named as the listings name them (never a path); the output is a file name
written to the server's checkpoint (LoRA) folder. Everything is checked before the job is
queued: a bad request is answered 4xx naming the field, and nothing is queued.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import ConfigDict, Field

from emaki.jobs.file_jobs import FileJobs
from emaki.merge.blocks import UNET_BLOCKS
from emaki.merge.by_name import DEFAULT_ALPHA
from emaki.params import CheckedModel
from emaki.server.api import job_view
from emaki.server.service import Service

router = APIRouter(prefix="/api", tags=["native"])
MAX_NAME = 255  # a file name
MAX_CANDIDATES = 16  # a lineage reads every candidate alongside the model, slice by slice


class LoraWeight(CheckedModel):
    """A LoRA to bake in, by name (`/api/loras`), with its text-encoder and UNet multipliers."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=MAX_NAME)
    te: float = Field(1.0, ge=-10, le=10)
    unet: float | None = Field(None, ge=-10, le=10, description="None: the te multiplier")


class MergeRequest(CheckedModel):
    """A1111's checkpoint merger: weighted-sum A·(1-α)+B·α, add-difference A+(B-C)·α (or one model
    with LoRAs baked in: no-interpolation); `blocks`: 25 UNet block weights IN00-IN11, M00,
    OUT00-OUT11 in place of α there."""

    model_config = ConfigDict(extra="forbid")

    models: list[str] = Field(min_length=1, max_length=3, description="A, B[, C] as /api/models names them")
    mode: Literal["weighted-sum", "add-difference", "no-interpolation"] | None = Field(
        None, description="None: by the number of models (1: no-interpolation, 2: weighted-sum, 3: add-difference)")
    alpha: float = Field(DEFAULT_ALPHA, ge=-10, le=10)
    blocks: list[float] | None = Field(None, min_length=len(UNET_BLOCKS), max_length=len(UNET_BLOCKS))
    loras: list[LoraWeight] = Field(default_factory=list, max_length=32)
    output: str = Field(min_length=1, max_length=MAX_NAME, description="a file name, e.g. mix.safetensors")
    overwrite: bool = False


class ExtractRequest(CheckedModel):
    """`emaki lora extract`: the LoRA of rank `rank` closest to `tuned − base`."""

    model_config = ConfigDict(extra="forbid")

    tuned: str = Field(min_length=1, max_length=MAX_NAME + 20)
    base: str = Field(min_length=1, max_length=MAX_NAME + 20)
    rank: int = Field(32, ge=1, le=1024)
    output: str = Field(min_length=1, max_length=MAX_NAME)
    overwrite: bool = False


class LineageRequest(CheckedModel):
    """`emaki lineage`: `model`, block by block, as a combination of `candidates` (least squares;
    `nonnegative`: coefficients ≥ 0, the candidates not taking part exactly 0)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=MAX_NAME + 20, description="as /api/models names it")
    candidates: list[str] = Field(min_length=1, max_length=MAX_CANDIDATES,
                                  description="the possible parents, as /api/models names them")
    nonnegative: bool = Field(False, strict=True)


def _service(request: Request) -> Service:
    return request.app.state.service


def _file_jobs(service: Service) -> FileJobs:
    return FileJobs(service.engine.workspace, service.engine.hashes)


def _checkpoint(service: Service, name: str, field: str) -> str:
    """The file of the checkpoint `name` (as the listings name it; a path is refused)."""
    return service.catalog.find_checkpoint(name, field).filename


def _submit(service: Service, kind: str, params: dict[str, Any]) -> dict[str, Any]:
    _file_jobs(service).check(kind, params)
    return job_view(service, service.store.submit(params, kind=kind))


@router.post("/merge", status_code=202)
def submit_merge(body: MergeRequest, request: Request) -> dict[str, Any]:
    """Queue a merge; the job's `result.name` is the new checkpoint's name."""
    service = _service(request)
    models = [_checkpoint(service, name, f"models[{i}]") for i, name in enumerate(body.models)]
    loras = []
    for i, lora in enumerate(body.loras):
        service.catalog.find_lora(lora.name, f"loras[{i}].name")
        loras.append({"name": lora.name, "te": lora.te, "unet": lora.te if lora.unet is None else lora.unet})
    params = {"models": models, "mode": body.mode, "alpha": body.alpha, "blocks": body.blocks, "loras": loras,
              "output": body.output, "overwrite": body.overwrite}
    return _submit(service, "merge", params)


@router.post("/lora/extract", status_code=202)
def submit_extraction(body: ExtractRequest, request: Request) -> dict[str, Any]:
    """Queue a LoRA extraction; the job's `result.name` is the new LoRA's name (its
    `block_errors` the relative error ‖ΔW − ΔW_r‖/‖ΔW‖ per merge block)."""
    service = _service(request)
    params = {"tuned": _checkpoint(service, body.tuned, "tuned"), "base": _checkpoint(service, body.base, "base"),
              "rank": body.rank, "output": body.output, "overwrite": body.overwrite}
    return _submit(service, "extract-lora", params)


@router.post("/lineage", status_code=202)
def submit_lineage(body: LineageRequest, request: Request) -> dict[str, Any]:
    """Queue a lineage trace; the job's `result` has, per block, the `coefficients` of each
    candidate (by file path, in `candidates` order) and the relative `residual`, the blocks
    bit-identical to a candidate, the LoRA-like differences and the `summary` lines."""
    service = _service(request)
    params = {"model": _checkpoint(service, body.model, "model"),
              "candidates": [_checkpoint(service, name, f"candidates[{i}]") for i, name in enumerate(body.candidates)],
              "nonnegative": body.nonnegative}
    return _submit(service, "lineage", params)
