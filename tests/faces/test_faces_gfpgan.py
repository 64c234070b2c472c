"""Restorer files through spandrel and emaki's safe readers: GFPGAN loads (full size only, as
spandrel builds it: a slow test), anything else is refused naming the file."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from upscalers.conftest import esrgan_state, write_model

from emaki.errors import ModelLoadError
from emaki.faces import load_restorer


def test_an_upscaler_file_is_not_taken_for_a_restorer(tmp_path: Path):
    path = write_model(esrgan_state(), tmp_path / "GFPGANv1.4.safetensors")
    with pytest.raises(ModelLoadError, match=r"GFPGANv1\.4\.safetensors: a ESRGAN model, not GFPGAN"):
        load_restorer(path)


def test_a_file_spandrel_does_not_know_names_codeformers_package(tmp_path: Path):
    path = tmp_path / "codeformer-v0.1.0.pth"
    torch.save({"params_ema": {"quantize.embedding.weight": torch.zeros(4, 4)}}, path)
    with pytest.raises(ModelLoadError, match="spandrel_extra_arches"):
        load_restorer(path)


@pytest.mark.slow
def test_a_gfpgan_file_loads_and_restores_repeatably(tmp_path: Path):
    from emaki.upscalers.spandrel_import import import_spandrel

    import_spandrel()
    from spandrel.architectures.GFPGAN import GFPGAN

    torch.manual_seed(0)
    network = GFPGAN(out_size=512, num_style_feat=512, channel_multiplier=2, decoder_load_path=None,
                     fix_decoder=False, num_mlp=8, input_is_latent=True, different_w=True, narrow=1, sft_half=True)
    path = tmp_path / "GFPGANv1.4.safetensors"
    save_file({name: value.contiguous() for name, value in network.state_dict().items()}, str(path))
    restore = load_restorer(path)
    face = torch.rand(1, 3, 512, 512) * 2 - 1
    first = restore(face)
    assert first.shape == (1, 3, 512, 512) and torch.isfinite(first).all()
    assert torch.equal(first, restore(face))  # the decoder's noise is seeded
