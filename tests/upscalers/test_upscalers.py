"""Upscaler models through spandrel: detection from tiny files, safe loading, tiling, A1111's
names and passes, `Engine.upscale`, and the hires fix with a model upscaler (demo model)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import compact_state, esrgan_state, write_model
from engine_runner import ONE_THREAD, engine_for, generate
from PIL import Image

from emaki.engine.hires import check_upscaler
from emaki.errors import ModelLoadError, ParamsError, UnsafeFileError
from emaki.infotext_codec import decode_infotext
from emaki.params import GenerationParams
from emaki.upscalers import describe_upscaler, find_upscaler, load_upscaler_model, upscale_image
from emaki.upscalers.tiling import tile_count, tile_layout, upscale_tiled
from emaki.upscalers.upscale import UpscaleProgress, model_passes
from emaki.workspace import Workspace

CPU = torch.device("cpu")


def smooth_image(width: int, height: int, seed: int = 0) -> torch.Tensor:
    """(1, 3, H, W) in [0, 1]: upsampled noise, a picture-like input."""
    g = torch.Generator().manual_seed(seed)
    return F.interpolate(torch.rand(1, 3, 9, 12, generator=g), size=(height, width), mode="bilinear")


@pytest.mark.parametrize("key, architecture, scale", [
    ("esrgan.safetensors", "ESRGAN", 4),
    ("esrgan.pth", "ESRGAN", 4),  # torch.save'd inside params_ema, as Real-ESRGAN ships them
    ("compact.safetensors", "RealESRGAN Compact", 2),
    ("compact.pth", "RealESRGAN Compact", 2),
])
def test_tiny_files_are_detected_with_their_scale(upscaler_files, key, architecture, scale):
    path = upscaler_files[key]
    assert describe_upscaler(path) == (architecture, scale)  # from names and shapes only
    model = load_upscaler_model(path)
    assert (model.architecture, model.scale) == (architecture, scale)
    out = model(torch.rand(1, 3, 10, 14))
    assert out.shape == (1, 3, 10 * scale, 14 * scale)


def test_models_get_rgb_and_the_result_lands_right(tmp_path):
    """A near-identity Compact model (its output adds the nearest-upscaled input): a red and
    blue picture comes back red and blue where it was, at twice the size."""
    model = load_upscaler_model(write_model(compact_state(gain=0.001), tmp_path / "near-identity.safetensors"))
    picture = Image.new("RGB", (24, 16), (230, 20, 10))
    picture.paste((10, 20, 230), (12, 0, 24, 16))
    out = upscale_image(picture, find_upscaler(str(model.path), None, allow_path=True), 2, model=model, tile=8,
                        overlap=2)
    assert out.size == (48, 32)
    expected = np.asarray(picture.resize((48, 32), Image.Resampling.NEAREST), dtype=np.float32)
    assert np.abs(np.asarray(out, dtype=np.float32) - expected).max() <= 3


def test_a_tiled_upscale_equals_an_untiled_one(upscaler_files):
    model = load_upscaler_model(upscaler_files["esrgan.safetensors"])
    image = smooth_image(90, 70)
    whole = upscale_tiled(model, image, 4, tile=0, overlap=0, device=CPU, dtype=torch.float32)
    tiled = upscale_tiled(model, image, 4, tile=32, overlap=8, device=CPU, dtype=torch.float32)
    assert tile_count(90, 70, 32, 8) == 12
    difference = (tiled - whole).abs()
    assert float(difference.mean()) < 2e-3  # only pixels near a seam differ, and little
    assert float(difference.max()) < 0.1
    # Without blending (each tile pasted whole over the last) the seams stand out far more.
    pasted = whole.clone()
    (tile_h, ys), (tile_w, xs) = tile_layout(70, 32, 8), tile_layout(90, 32, 8)
    for y in ys:
        for x in xs:
            pasted[..., y * 4:(y + tile_h) * 4, x * 4:(x + tile_w) * 4] = model(image[..., y:y + tile_h, x:x + tile_w])
    assert float((pasted - whole).abs().mean()) > 2 * float(difference.mean())


def test_seams_are_a_partition_of_unity():
    """With a model that looks at one pixel only, tiles blend back to exactly the whole."""
    def nearest(x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=3, mode="nearest")

    image = smooth_image(77, 50)
    tiled = upscale_tiled(nearest, image, 3, tile=24, overlap=7, device=CPU, dtype=torch.float32)
    assert torch.allclose(tiled, nearest(image), atol=1e-6)


def test_progress_hears_every_tile_of_every_pass(upscaler_files):
    model = load_upscaler_model(upscaler_files["compact.safetensors"])  # 2x
    events: list[UpscaleProgress] = []
    picture = Image.new("RGB", (40, 30), "gray")
    out = upscale_image(picture, find_upscaler(str(model.path), None, allow_path=True), 3, model=model, tile=24,
                        overlap=4, progress=events.append)
    # A1111's passes: 40x30 → 80x60 (still short of 120x88) → 160x120, then Lanczos to 120x88.
    assert model_passes((40, 30), 2, (120, 88)) == [(40, 30), (80, 60)]
    assert out.size == (120, 88)
    total = tile_count(40, 30, 24, 4) + tile_count(80, 60, 24, 4)
    assert [e.tile for e in events] == list(range(1, total + 1))
    assert {e.tiles for e in events} == {total}


def test_resamplers_follow_a1111_sizes():
    picture = Image.new("RGB", (100, 75), "white")
    for name in ("Lanczos", "Nearest", "None"):
        assert upscale_image(picture, find_upscaler(name, None), 2).size == (200, 144)  # sides rounded to 8
    with pytest.raises(ParamsError, match="hires fix only"):
        upscale_image(picture, find_upscaler("Latent", None), 2)


def test_torchscript_is_refused_by_name(tmp_path):
    path = tmp_path / "scripted.pt"
    torch.jit.script(torch.nn.Conv2d(3, 3, 3)).save(str(path))
    with pytest.raises(ModelLoadError, match="TorchScript archive, refused"):
        load_upscaler_model(path)
    with pytest.raises(ModelLoadError, match="TorchScript"):
        describe_upscaler(path)


class _RunsCode:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_a_pickle_that_runs_code_is_refused_unrun(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "4x-Evil.pth"
    state = dict(esrgan_state())
    state["payload"] = _RunsCode(str(marker))  # type: ignore[assignment]
    torch.save(state, path)
    with pytest.raises(UnsafeFileError, match="4x-Evil.pth: refused"):
        load_upscaler_model(path)
    assert not marker.exists()


def test_unknown_architecture_names_the_file(tmp_path):
    path = write_model({"encoder.weight": torch.zeros(4, 4)}, tmp_path / "odd.safetensors")
    with pytest.raises(ModelLoadError, match=r"odd\.safetensors: not an upscaler model spandrel knows"):
        load_upscaler_model(path)


def test_names_as_a1111_and_refusals_naming_the_file_and_folder(tmp_path):
    home = tmp_path / "home"
    workspace = Workspace(home, tmp_path / "a1111")
    write_model(esrgan_state(), home / "upscalers" / "4x-Tiny.safetensors")
    write_model(esrgan_state(blocks=1, seed=2), tmp_path / "a1111" / "models" / "RealESRGAN" / "RealESRGAN_x4plus_anime_6B.pth")
    anime = find_upscaler("R-ESRGAN 4x+ Anime6B", workspace)
    assert (anime.kind, anime.path.name, anime.scale) == ("model", "RealESRGAN_x4plus_anime_6B.pth", 4)
    assert find_upscaler("4x-Tiny", workspace).path == home / "upscalers" / "4x-Tiny.safetensors"
    assert find_upscaler("Latent (nearest-exact)", workspace).kind == "latent"
    with pytest.raises(ParamsError, match=r"'R-ESRGAN 4x\+' needs the file RealESRGAN_x4plus\.pth.*put it in "
                                          + str(home / "upscalers")):
        find_upscaler("R-ESRGAN 4x+", workspace, field="hr_upscaler")
    with pytest.raises(ParamsError, match="hr_upscaler: '4x-Nope' is not an upscaler emaki has .*4x-Tiny"):
        check_upscaler("4x-Nope", workspace)
    # A name from a request or a PNG is never opened as a path; only the CLI and Python callers may.
    path = str(home / "upscalers" / "4x-Tiny.safetensors")
    with pytest.raises(ParamsError):
        check_upscaler(path, workspace)
    assert find_upscaler(path, workspace, allow_path=True).name == "4x-Tiny"
    rows = {row["name"]: row for row in engine_for(workspace).upscalers()}
    assert list(rows)[:3] == ["None", "Lanczos", "Nearest"]
    assert (rows["4x-Tiny"]["architecture"], rows["4x-Tiny"]["scale"]) == ("ESRGAN", 4)
    assert rows["R-ESRGAN 4x+ Anime6B"]["path"].endswith("RealESRGAN_x4plus_anime_6B.pth")


def test_engine_upscale_by_name_and_by_path(home_upscalers, tmp_path):
    engine = engine_for(Workspace(home_upscalers.parent), ONE_THREAD)
    picture = Image.new("RGB", (30, 20), (200, 120, 40))
    events: list[UpscaleProgress] = []
    out = engine.upscale(picture, "4x-Tiny", 2, tile=16, overlap=4, progress=events.append)
    assert out.size == (56, 40)  # 60x40, sides rounded down to multiples of 8 as A1111 does
    assert events and events[-1].tile == events[-1].tiles
    path = tmp_path / "input.png"
    picture.save(path)
    by_path = engine.upscale(path, str(home_upscalers / "2x-Compact.pth"), 2)
    assert by_path.size == (56, 40)
    with pytest.raises(ParamsError, match="overlap"):
        engine.upscale(picture, "4x-Tiny", 2, tile=16, overlap=16)


def hires(**fields):
    base = {"prompt": "1girl, blonde hair", "seed": 3, "steps": 2, "enable_hr": True, "hr_second_pass_steps": 1,
            "denoising_strength": 0.4}
    return generate(GenerationParams.create(**(base | fields)), save=False)


def test_hires_fix_with_a_model_upscaler(home_upscalers):
    result = hires(hr_upscaler="4x-Tiny")
    image = result.images[0]
    assert image.image.size == (128, 128)
    assert "Hires upscaler: 4x-Tiny" in image.infotext
    lanczos = hires(hr_upscaler="Lanczos").images[0].image
    assert not np.array_equal(np.asarray(lanczos), np.asarray(image.image))  # the model did the upscale
    again = generate(decode_infotext(image.infotext), save=False).images[0]  # read back by name
    assert np.array_equal(np.asarray(again.image), np.asarray(image.image))


def test_hires_fix_refuses_a_missing_model_by_folder(home_upscalers):
    with pytest.raises(ParamsError, match=r"'R-ESRGAN 4x\+ Anime6B' needs the file RealESRGAN_x4plus_anime_6B\.pth"):
        hires(hr_upscaler="R-ESRGAN 4x+ Anime6B")
