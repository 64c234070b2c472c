"""An interrupt stops a run inside the UNet and the VAE, not only between sampler steps (issue 16,
item 13: a cancelled 2048² job ran on for minutes, one step at a time): the images finished
before are kept, and no hook is left on the cached model."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch
from engine_runner import engine_for, runner_workspace

from emaki.engine import Cancel
from emaki.errors import Interrupted
from emaki.models.components import SDComponents
from emaki.models.resolve import demo_model_path
from emaki.params import GenerationParams

PARAMS = GenerationParams.create(prompt="1girl, red hair", seed=7, steps=3, width=32, height=32, n_iter=2,
                                 model=str(demo_model_path()))


def engine_and_parts():
    engine = engine_for(runner_workspace())
    return engine, engine.load(str(demo_model_path())).components


def hooks(parts: SDComponents) -> int:
    """Every forward hook and pre-hook on the UNet's and the VAE's modules (transformers keeps
    hooks of its own on the text encoder)."""
    modules = [*parts.unet.modules(), *parts.vae.modules()]
    return sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in modules)


@contextmanager
def counting(module: torch.nn.Module, calls: list[int], then=None) -> Iterator[None]:
    """Count `module`'s forward calls in `calls`; `then(count)` runs after each."""

    def hook(*_args: object) -> None:
        calls.append(1)
        if then is not None:
            then(len(calls))

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def unet_calls_per_batch() -> int:
    engine, parts = engine_and_parts()
    calls: list[int] = []
    with counting(parts.unet.down_blocks[0], calls):
        engine.generate(PARAMS.updated(n_iter=1), save=False)
    return len(calls)


def test_an_interrupt_stops_the_step_inside_the_unet_and_keeps_the_first_batch():
    per_batch = unet_calls_per_batch()
    engine, parts = engine_and_parts()
    before = hooks(parts)
    cancel = Cancel()
    first: list[int] = []
    last: list[int] = []
    stop_at = per_batch + 2  # the second batch, in the middle of a step

    def interrupt(count: int) -> None:
        if count == stop_at:
            cancel.interrupt.set()

    with (counting(parts.unet.down_blocks[0], first, interrupt), counting(parts.unet.up_blocks[-1], last),
          pytest.raises(Interrupted) as stopped):
        engine.generate(PARAMS, cancel=cancel, save=False)
    assert len(first) == stop_at and len(last) == stop_at - 1  # the step never reached the last block
    assert [image.seed for image in stopped.value.result.images] == [7]  # the first batch is kept
    assert hooks(parts) == before


def test_an_interrupt_stops_the_vae_decode_and_keeps_the_first_batch():
    engine, parts = engine_and_parts()
    before = hooks(parts)
    cancel = Cancel()
    first: list[int] = []
    last: list[int] = []
    decoder = parts.vae.decoder

    def interrupt(count: int) -> None:
        if count == 2:  # the second batch's decode has begun
            cancel.interrupt.set()

    with (counting(decoder.up_blocks[0], first, interrupt), counting(decoder.up_blocks[-1], last),
          pytest.raises(Interrupted) as stopped):
        engine.generate(PARAMS, cancel=cancel, save=False)
    assert len(first) == 2 and len(last) == 1
    assert [image.seed for image in stopped.value.result.images] == [7]
    assert hooks(parts) == before


def test_an_interrupt_from_another_thread_ends_a_long_step():
    engine, parts = engine_and_parts()
    cancel = Cancel()
    started = threading.Event()
    last: list[int] = []

    def slow_block(*_args: object) -> None:  # a block as slow as a 2048² one, for the other thread
        started.set()
        assert cancel.interrupt.wait(timeout=30)

    handle = parts.unet.down_blocks[0].register_forward_hook(slow_block)
    threading.Thread(target=lambda: started.wait(30) and cancel.interrupt.set(), daemon=True).start()
    try:
        with counting(parts.unet.up_blocks[-1], last), pytest.raises(Interrupted) as stopped:
            engine.generate(PARAMS, cancel=cancel, save=False)
    finally:
        handle.remove()
    assert last == [] and stopped.value.result.images == []


def test_no_hook_is_left_after_a_finished_run_and_the_next_run_is_not_interrupted():
    engine, parts = engine_and_parts()
    before = hooks(parts)
    cancel = Cancel()
    assert len(engine.generate(PARAMS, cancel=cancel, save=False).images) == 2
    assert hooks(parts) == before
    cancel.interrupt.set()
    with pytest.raises(Interrupted):
        engine.generate(PARAMS, cancel=cancel, save=False)
    assert hooks(parts) == before
    assert len(engine.generate(PARAMS, save=False).images) == 2  # without a Cancel: no checks at all


def test_skip_still_drops_only_the_batch_being_sampled():
    engine, parts = engine_and_parts()
    cancel = Cancel()
    calls: list[int] = []

    def skip(count: int) -> None:
        if count == 2:  # mid-step of the first batch
            cancel.skip.set()

    with counting(parts.unet.down_blocks[0], calls, skip):
        result = engine.generate(PARAMS, cancel=cancel, save=False)
    assert [image.seed for image in result.images] == [8] and not cancel.skip.is_set()
