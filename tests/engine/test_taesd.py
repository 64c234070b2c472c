"""The TAESD preview decoder (`emaki.engine.taesd`): a file laid out as madebyollin's (keys and
shapes from the table below, random weights) loads by its key names, from safetensors or a
restricted pickle, and decodes a 4×8×8 latent to a 64×64 image; live previews use it when the
workspace has it and the model's latents are SD 1.x's, the linear map otherwise."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from emaki.engine.preview import DecodedPreviews, Previewer
from emaki.engine.run import GenerationProgress
from emaki.engine.taesd import decode_preview, decoder_state, find_tiny_decoder, load_tiny_decoder
from emaki.errors import ModelLoadError
from emaki.jobs.worker import Progress
from emaki.workspace import Workspace


def block_shapes(index: int) -> dict[str, tuple[int, ...]]:
    return {f"{index}.conv.{i}.{kind}": (64, 64, 3, 3) if kind == "weight" else (64,)
            for i in (0, 2, 4) for kind in ("weight", "bias")}


def taesd_shapes() -> dict[str, tuple[int, ...]]:
    """madebyollin/taesd's `taesd_decoder.pth`: one nn.Sequential, Clamp at 0 (no weights),
    blocks at 3-5, 8-10, 13-15 and 18, bias-free convolutions after each upsampling (7, 12, 17)."""
    shapes: dict[str, tuple[int, ...]] = {"1.weight": (64, 4, 3, 3), "1.bias": (64,)}
    for index in (3, 4, 5, 8, 9, 10, 13, 14, 15, 18):
        shapes |= block_shapes(index)
    shapes |= {f"{index}.weight": (64, 64, 3, 3) for index in (7, 12, 17)}
    return shapes | {"19.weight": (3, 64, 3, 3), "19.bias": (3,)}


def random_state(seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {key: torch.randn(shape, generator=gen) * 0.05 for key, shape in taesd_shapes().items()}


@pytest.fixture
def taesd_file(tmp_path: Path) -> Path:
    path = tmp_path / "taesd_decoder.safetensors"
    save_file(random_state(), str(path))
    return path


def test_a_taesd_file_loads_by_key_names_and_decodes_a_latent_eightfold(taesd_file, tmp_path):
    decoder = load_tiny_decoder(taesd_file)
    assert decoder.latent_channels == 4
    assert torch.equal(decoder.state_dict()["19.weight"], random_state()["19.weight"])
    image = decode_preview(decoder, torch.randn(4, 8, 8))
    assert image.size == (64, 64) and image.mode == "RGB"
    assert len(np.unique(np.asarray(image))) > 1
    pickled = tmp_path / "taesd_decoder.pth"
    torch.save(random_state(), pickled)  # A1111's download, read through the restricted loader
    again = decode_preview(load_tiny_decoder(pickled), torch.zeros(4, 8, 8))
    assert np.array_equal(np.asarray(again), np.asarray(decode_preview(decoder, torch.zeros(4, 8, 8))))


def test_wrapped_and_diffusers_keys_map_to_the_same_layers():
    state = random_state()
    assert decoder_state({f"decoder.{k}": v for k, v in state.items()}).keys() == state.keys()
    tiny = {"decoder.layers.0.weight": state["1.weight"], "decoder.layers.17.conv.4.bias": state["18.conv.4.bias"],
            "encoder.layers.0.weight": torch.zeros(1)}  # diffusers' AutoencoderTiny
    assert decoder_state(tiny).keys() == {"1.weight", "18.conv.4.bias"}


def test_a_file_that_is_not_a_taesd_decoder_is_refused_by_name(tmp_path):
    path = tmp_path / "taesd_decoder.safetensors"
    save_file({"1.weight": torch.zeros(64, 4, 3, 3)}, str(path))
    with pytest.raises(ModelLoadError, match=r"taesd_decoder.safetensors: not a TAESD decoder \(.*Missing key"):
        load_tiny_decoder(path)
    save_file({"decoder.conv_in.weight": torch.zeros(1)}, str(path))  # a full VAE's decoder
    with pytest.raises(ModelLoadError, match="not a TAESD decoder"):
        load_tiny_decoder(path)


def test_the_decoder_is_found_where_a1111_keeps_it(tmp_path):
    workspace = Workspace(tmp_path / "home", a1111=tmp_path / "a1111")
    assert find_tiny_decoder(workspace) is None
    a1111 = tmp_path / "a1111" / "models" / "VAE-approx" / "taesd_decoder.pth"
    a1111.parent.mkdir(parents=True)
    torch.save(random_state(), a1111)
    assert find_tiny_decoder(workspace) == a1111
    own = tmp_path / "home" / "models" / "VAE" / "taesd_decoder.safetensors"
    own.parent.mkdir(parents=True)
    save_file(random_state(), str(own))
    assert find_tiny_decoder(workspace) == own  # emaki's own folders first


def sd_like(factor: int = 8) -> Any:
    return SimpleNamespace(config=SimpleNamespace(vae_scale_factor=factor, latent_channels=4))


def test_previews_use_taesd_when_present_and_the_linear_map_otherwise(taesd_file, tmp_path):
    seen: list[GenerationProgress] = []
    workspace = Workspace(tmp_path / "home")
    previews = Previewer()
    assert previews.decoded(seen.append, sd_like(), workspace) == seen.append  # no file: the map
    approx = tmp_path / "home" / "models" / "VAE-approx"
    approx.mkdir(parents=True)
    taesd_file.rename(approx / taesd_file.name)
    assert previews.decoded(seen.append, sd_like(4), workspace) == seen.append  # not SD 1.x latents
    decoded = previews.decoded(seen.append, sd_like(), workspace)
    assert isinstance(decoded, DecodedPreviews)
    matrix = np.eye(5, 3, dtype=np.float32)
    for step in (1, 2, 3):
        decoded(GenerationProgress(0, 1, step, 3, torch.randn(1, 4, 8, 8), matrix))
    first, last = (event.draw_preview() if event.draw_preview is not None else None for event in (seen[0], seen[-1]))
    assert first is not None and first.size == (64, 64)
    assert last is not None  # the last step is always due
    progress = Progress(latent=seen[0].latent[0].numpy(), preview_map=matrix, preview=first)
    drawn = Image.open(io.BytesIO(base64.b64decode(progress.preview_base64() or "")))
    assert drawn.size == (64, 64)  # TAESD's picture, not the map's (enlarged to at least 128)
    linear = Image.open(io.BytesIO(base64.b64decode(Progress(latent=progress.latent, preview_map=matrix)
                                                    .preview_base64() or "")))
    assert linear.size == (128, 128)


class Exploding(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise AssertionError("decoded")


def test_a_progress_callback_that_never_draws_decodes_nothing():
    """The CLI's progress bar takes the steps, not the previews: TAESD costs it nothing."""
    seen: list[GenerationProgress] = []
    decoded = DecodedPreviews(seen.append, Exploding())  # type: ignore[arg-type]
    for step in (1, 2):
        decoded(GenerationProgress(0, 1, step, 2, torch.randn(1, 4, 8, 8)))
    assert [event.step for event in seen] == [1, 2]
