"""LoRA weights are computed once per set (issue 15: re-patching only when the set of networks
changes): a run asking for the same LoRAs at the same strengths swaps in the weights the last
run made; other strengths, another order of tags or a rewritten file compute them again; the
cached model is its own again after every run."""

from __future__ import annotations

import gc
import os
from pathlib import Path

import pytest
import torch
from engine_runner import ONE_THREAD
from tiny_lora import write_tiny_lora

import emaki.networks.lora.apply as apply_module
from emaki.engine import Engine
from emaki.engine.networks import NETWORK_KINDS
from emaki.params import GenerationParams
from emaki.workspace import Workspace


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    write_tiny_lora(tmp_path / "loras" / "style.safetensors", seed=0)
    write_tiny_lora(tmp_path / "loras" / "other.safetensors", seed=5)
    return Engine(Workspace(tmp_path), ONE_THREAD)


@pytest.fixture
def computed(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many ΔW sets were computed (one `apply_loras` call per set)."""
    calls: list[int] = []
    real = apply_module.apply_loras

    def counted(chosen, targets, replace):  # noqa: ANN001, ANN202
        calls.append(len(chosen))
        return real(chosen, targets, replace)

    monkeypatch.setattr(apply_module, "apply_loras", counted)
    return calls


def pixels(engine: Engine, prompt: str) -> bytes:
    params = GenerationParams.create(prompt=prompt, seed=3, steps=2, width=32, height=32)
    return engine.generate(params, save=False).images[0].image.tobytes()


def unet_weights(engine: Engine) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in engine.load(None).components.unet.state_dict().items()}


def test_the_same_set_is_computed_once_and_gives_the_same_pixels(engine: Engine, computed: list[int]) -> None:
    plain = pixels(engine, "1girl")
    before = unet_weights(engine)
    first = pixels(engine, "1girl <lora:style:1.5>")
    second = pixels(engine, "1girl, smile <lora:style:1.5>")  # other words, same LoRAs
    again = pixels(engine, "1girl <lora:style:1.5>")
    assert computed == [1] and first == again != plain and second != first
    after = unet_weights(engine)
    assert all(torch.equal(before[k], after[k]) for k in before)  # restored after every run
    assert pixels(engine, "1girl") == plain and computed == [1]  # no LoRA: nothing computed


def test_other_strengths_order_or_file_compute_again(engine: Engine, computed: list[int], tmp_path: Path) -> None:
    pixels(engine, "1girl <lora:style:1> <lora:other:0.5>")
    pixels(engine, "1girl <lora:style:1> <lora:other:0.7>")  # another strength
    pixels(engine, "1girl <lora:other:0.7> <lora:style:1>")  # another order: another rounding of the sum
    assert computed == [2, 2, 2]
    path = tmp_path / "loras" / "style.safetensors"
    stamp = path.stat().st_mtime_ns
    write_tiny_lora(path, seed=9)  # retrained under the same name
    os.utime(path, ns=(stamp + 10**9, stamp + 10**9))
    fresh = pixels(engine, "1girl <lora:style:1>")
    assert computed == [2, 2, 2, 1]
    alone = Engine(Workspace(tmp_path), ONE_THREAD)  # a new engine, with the new file only
    assert pixels(alone, "1girl <lora:style:1>") == fresh


def test_the_kept_weights_go_with_their_model(engine: Engine, tiny_safetensors: Path) -> None:
    pixels(engine, "1girl <lora:style:1>")
    library = engine.networks.library(next(k for k in NETWORK_KINDS if k.name == "lora"))
    assert len(library.kept) == 1
    engine.load(str(tiny_safetensors))  # the demo model leaves the one-model cache
    gc.collect()
    assert len(library.kept) == 0
