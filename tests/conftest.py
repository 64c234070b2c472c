"""Tiny SD-architecture models built at test time, in every layout users have on disk."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from worker_cores import pin_this_worker

from emaki.devices import DevicePolicy
from emaki.models.checkpoint import save_single_file
from emaki.models.components import SDComponents, build_random_components, sd_alphas_cumprod
from emaki.models.configs import tiny_config
from emaki.models.convert import components_to_ldm

# Under pytest-xdist, this worker and everything it starts stay on its share of the cores
# (tests/worker_cores.py): 2 workers on 2 cores never run more than 2 busy threads.
pin_this_worker(os.environ)
# Threads for the tests' own torch work, decided where the engine decides them (`idle_cores`:
# the worker's share of the cores, all of them in a serial run).
DevicePolicy.choose("fp32", "cpu").apply()
TEST_THREADS = torch.get_num_threads()
# Files that take minutes (the README's: three trainings of 400 steps) run first. `make test`
# keeps this order in its queue (`--no-loadscope-reorder`), so one worker starts on them at once
# while the other takes the rest, instead of one finishing them alone at the end.
LONG_FILES = ("tests/test_readme.py",)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: not item.nodeid.startswith(LONG_FILES))  # stable: the rest keep their order


@pytest.fixture(autouse=True)
def _threads_back_to_the_share() -> Iterator[None]:
    """An engine run with `--threads N` in this process leaves torch at N threads (torch's
    setting is process-wide): later tests on this worker get the share back."""
    yield
    if torch.get_num_threads() != TEST_THREADS:
        torch.set_num_threads(TEST_THREADS)


def _isolate(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    monkeypatch.setenv("EMAKI_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # Empty means "no A1111 install"; set (not deleted) so that a CLI run that exports it
    # in-process (`--a1111`) is undone after each test.
    monkeypatch.setenv("EMAKI_A1111", "")
    # `--precision auto` (the default) would pick bf16 on a CPU with AMX/AVX-512 BF16: tests that
    # leave the precision open (engines, the server, `emaki` run as a subprocess) keep the fp32
    # results their goldens hold.
    monkeypatch.setattr("emaki.devices.cpu_flags", lambda *args: frozenset())
    monkeypatch.setenv("EMAKI_PRECISION", "fp32")


@pytest.fixture(scope="session", autouse=True)
def _isolated_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """For module- and session-scoped fixtures, which start before `_isolated_home`: without it
    their engines and servers wrote to ~/.local/share/emaki, one home for every worker and run."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        _isolate(monkeypatch, tmp_path_factory.mktemp("session-home"))
        yield


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    _isolate(monkeypatch, tmp_path_factory.mktemp("emaki-home"))


@pytest.fixture(scope="session")
def tiny_components() -> SDComponents:
    return build_random_components(tiny_config(), seed=0)


@pytest.fixture(scope="session")
def tiny_ldm_state(tiny_components: SDComponents) -> dict[str, torch.Tensor]:
    c = tiny_components
    return components_to_ldm(c.unet, c.vae, c.text_encoder, c.config.unet, c.config.vae)


@pytest.fixture(scope="session")
def tiny_safetensors(tmp_path_factory: pytest.TempPathFactory, tiny_components: SDComponents) -> Path:
    """Single-file LDM layout, fp32, with emaki's config metadata."""
    return save_single_file(tiny_components, tmp_path_factory.mktemp("st") / "tiny.safetensors", dtype=None)


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory, tiny_ldm_state: dict[str, torch.Tensor]) -> Path:
    """The layout of the original SD/NAI .ckpt files: `state_dict` wrapper, fp16, old text keys,
    EMA copies and schedule buffers, saved with torch.save (no config metadata)."""
    state: dict[str, torch.Tensor] = {}
    for key, value in tiny_ldm_state.items():
        key = key.replace("cond_stage_model.transformer.text_model.", "cond_stage_model.transformer.")
        state[key] = value.half()
        if key.startswith("model.diffusion_model."):
            state["model_ema." + "".join(key.split(".")[1:])] = (value + 1).half()
    state["model_ema.decay"] = torch.tensor(0.9999)
    state["alphas_cumprod"] = sd_alphas_cumprod(tiny_config()).float()
    path = tmp_path_factory.mktemp("ckpt") / "tiny.ckpt"
    torch.save({"state_dict": state, "global_step": 470000, "epoch": 6}, path)
    return path


@pytest.fixture(scope="session")
def tiny_diffusers(tmp_path_factory: pytest.TempPathFactory, tiny_components: SDComponents) -> Path:
    folder = tmp_path_factory.mktemp("diffusers") / "tiny-diffusers"
    c = tiny_components
    c.unet.save_pretrained(folder / "unet")
    c.vae.save_pretrained(folder / "vae")
    c.text_encoder.save_pretrained(folder / "text_encoder")
    (folder / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
    return folder
