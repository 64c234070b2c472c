"""`--compile` (torch.compile on the UNet): reaches the model the engine prepares, changes no
pixel and no infotext; the compiled UNet computes what the eager one does."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from cli_runner import run_cli
from PIL import Image

from emaki.devices import DevicePolicy
from emaki.engine import Engine
from emaki.engine.speed.compile import compile_cache_dir, is_compiled, set_compiled
from emaki.params import GenerationParams
from emaki.workspace import Workspace


@pytest.fixture()
def compiled_units(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """`nn.Module.compile` made instant: records which module asked, then runs it eagerly
    through the compiled-call slot (compiling for real takes minutes on 2 cores; the slow test
    below compiles for real)."""
    asked: list[str] = []

    def fake_compile(module: torch.nn.Module, *args: object, **kwargs: object) -> None:
        asked.append(type(module).__name__)
        module._compiled_call_impl = module._call_impl

    monkeypatch.setattr(torch.nn.Module, "compile", fake_compile)
    return asked


def _generate(tmp_path: Path, model: Path, compile: bool) -> tuple[torch.Tensor, str]:
    engine = Engine(Workspace(tmp_path), DevicePolicy.choose("fp32", "cpu", threads=1, compile=compile))
    params = GenerationParams.create(prompt="1girl", model=str(model), seed=3, steps=2, width=32, height=32)
    result = engine.generate(params, save=False)
    unet = engine.load(str(model)).components.unet
    assert is_compiled(unet) == compile
    image = result.images[0]
    return torch.tensor(list(image.image.getdata())), image.infotext


def test_the_engine_compiles_the_unet_and_the_image_and_infotext_stay(tmp_path, tiny_safetensors, compiled_units):
    eager, eager_text = _generate(tmp_path, tiny_safetensors, compile=False)
    assert compiled_units == []
    compiled, compiled_text = _generate(tmp_path, tiny_safetensors, compile=True)
    assert compiled_units == ["UNet2DConditionModel"]
    assert torch.equal(compiled, eager)
    assert compiled_text == eager_text


def test_set_compiled_turns_compile_on_once_and_off_again(tiny_components, compiled_units):
    unet = tiny_components.unet
    try:
        set_compiled(unet, True)
        set_compiled(unet, True)
        assert is_compiled(unet) and compiled_units == ["UNet2DConditionModel"]
    finally:
        set_compiled(unet, False)
    assert not is_compiled(unet)


def test_cli_compile_flag_compiles_with_the_cache_in_the_workspace(capsys, tmp_path, tiny_safetensors,
                                                                   compiled_units, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "restored after the test")
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR")
    code, out, err = run_cli(capsys, "generate", "1girl", "--model", str(tiny_safetensors), "--steps", "1",
                             "--size", "32x32", "--seed", "1", "--compile", "--out", str(tmp_path / "out"))
    assert code == 0, err
    assert compiled_units == ["UNet2DConditionModel"]
    home = Path(os.environ["EMAKI_HOME"])
    assert Path(os.environ["TORCHINDUCTOR_CACHE_DIR"]) == compile_cache_dir(home)
    text = Image.open(out.strip().splitlines()[-1]).info["parameters"]
    assert "ompile" not in text


@pytest.mark.slow
def test_the_compiled_unet_computes_what_the_eager_one_does(tiny_components, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    unet = tiny_components.unet
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, unet.config.in_channels, 8, 8, generator=generator)
    context = torch.randn(2, 77, unet.config.cross_attention_dim, generator=generator)
    t = torch.tensor([500.0, 500.0])
    with torch.inference_mode():
        eager = unet(x, t, encoder_hidden_states=context).sample
        try:
            set_compiled(unet, True)
            compiled = unet(x, t, encoder_hidden_states=context).sample
        finally:
            set_compiled(unet, False)
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-5)


def test_the_server_engine_compiles_when_asked(tmp_path):
    from emaki.server.app import ServerSettings, create_app

    for compile in (False, True):
        app = create_app(ServerSettings(workspace=Workspace(tmp_path), run_worker=False, compile=compile))
        assert app.state.service.engine.policy.compile is compile
