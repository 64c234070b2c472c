"""Checkpoint loading: every layout users have, bit-exact; bad files give clear errors."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from emaki.errors import ModelLoadError, UnsafeFileError
from emaki.models.checkpoint import infer_config, read_checkpoint
from emaki.models.configs import sd15_config, tiny_config
from emaki.models.convert import components_to_ldm, ldm_to_text_encoder, ldm_to_unet, ldm_to_vae
from emaki.models.loader import ModelCache, load_model_uncached


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module, dtype: torch.dtype | None = None) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        expected = sa[key] if dtype is None else sa[key].to(dtype).float()
        assert torch.equal(expected, sb[key]), key


def test_ldm_round_trip_is_bit_exact(tiny_components):
    c = tiny_components
    ldm = components_to_ldm(c.unet, c.vae, c.text_encoder, c.config.unet, c.config.vae)
    assert "model.diffusion_model.input_blocks.0.0.weight" in ldm
    assert "first_stage_model.encoder.mid.attn_1.q.weight" in ldm
    assert ldm["first_stage_model.encoder.mid.attn_1.q.weight"].ndim == 4  # LDM uses 1x1 convs
    assert "cond_stage_model.transformer.text_model.final_layer_norm.weight" in ldm
    for module, back in ((c.unet, ldm_to_unet(ldm, c.config.unet)), (c.vae, ldm_to_vae(ldm, c.config.vae)),
                         (c.text_encoder, ldm_to_text_encoder(ldm))):
        state = module.state_dict()
        assert state.keys() == back.keys()
        assert all(torch.equal(state[k], back[k].reshape(state[k].shape)) for k in state)


def test_sd15_key_names_match_the_original_layout():
    """Key names of the real SD 1.5 layout, built from a shape-only (meta) model."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    config = sd15_config()
    with init_empty_weights():
        unet = UNet2DConditionModel(**config.unet)
        vae = AutoencoderKL(**config.vae)
        text = CLIPTextModel(CLIPTextConfig(**config.text_encoder))
    ldm = components_to_ldm(unet, vae, text, config.unet, config.vae)
    for key in (
        "model.diffusion_model.time_embed.0.weight",
        "model.diffusion_model.input_blocks.3.0.op.weight",
        "model.diffusion_model.input_blocks.8.1.transformer_blocks.0.attn2.to_k.weight",
        "model.diffusion_model.middle_block.1.proj_out.weight",
        "model.diffusion_model.output_blocks.2.1.conv.weight",
        "model.diffusion_model.output_blocks.5.2.conv.weight",
        "model.diffusion_model.output_blocks.11.1.transformer_blocks.0.ff.net.2.weight",
        "model.diffusion_model.out.2.bias",
        "first_stage_model.decoder.up.3.upsample.conv.weight",
        "first_stage_model.encoder.down.1.block.0.nin_shortcut.weight",
        "first_stage_model.decoder.mid.block_2.conv2.weight",
        "cond_stage_model.transformer.text_model.encoder.layers.11.mlp.fc2.weight",
    ):
        assert key in ldm, key
    unet_keys = [k for k in ldm if k.startswith("model.diffusion_model.")]
    assert len(unet_keys) == 686  # the count in every SD 1.x checkpoint
    inferred = infer_config(ldm, Path("sd15"))
    assert inferred.unet["block_out_channels"] == [320, 640, 1280, 1280]
    assert inferred.unet["down_block_types"] == config.unet["down_block_types"]
    assert inferred.unet["up_block_types"] == config.unet["up_block_types"]
    assert inferred.unet["layers_per_block"] == 2
    assert inferred.unet["cross_attention_dim"] == 768
    assert inferred.vae["block_out_channels"] == [128, 256, 512, 512]
    assert inferred.text_encoder["num_attention_heads"] == 12
    assert inferred.text_encoder["num_hidden_layers"] == 12


def test_safetensors_single_file_loads_exactly(tiny_components, tiny_safetensors):
    loaded = load_model_uncached(tiny_safetensors)
    assert_same_weights(tiny_components.unet, loaded.components.unet)
    assert_same_weights(tiny_components.vae, loaded.components.vae)
    assert_same_weights(tiny_components.text_encoder, loaded.components.text_encoder)
    assert loaded.name == "tiny"
    assert len(loaded.hash) == 10


def test_ckpt_with_wrapper_old_keys_ema_and_fp16(tiny_components, tiny_ckpt):
    """No config metadata: sizes are inferred; the non-EMA weights are used, as A1111 does."""
    loaded = load_model_uncached(tiny_ckpt)
    assert loaded.components.config.unet["block_out_channels"] == tiny_config().unet["block_out_channels"]
    assert_same_weights(tiny_components.unet, loaded.components.unet, dtype=torch.float16)
    assert_same_weights(tiny_components.text_encoder, loaded.components.text_encoder, dtype=torch.float16)
    assert loaded.components.unet.dtype == torch.float32


def test_format_is_sniffed_not_taken_from_the_extension(tmp_path, tiny_safetensors, tiny_components):
    disguised = tmp_path / "model.ckpt"
    disguised.write_bytes(tiny_safetensors.read_bytes())
    assert_same_weights(tiny_components.vae, load_model_uncached(disguised).components.vae)


def test_diffusers_folder(tiny_components, tiny_diffusers):
    loaded = load_model_uncached(tiny_diffusers)
    assert_same_weights(tiny_components.unet, loaded.components.unet)
    assert loaded.name == "tiny-diffusers"


def test_separate_vae_replaces_the_models_vae(tmp_path, tiny_safetensors, tiny_components):
    from emaki.models.convert import vae_to_ldm

    other = {k: v + 0.5 for k, v in vae_to_ldm(tiny_components.vae.state_dict(), tiny_components.config.vae).items()}
    vae_file = tmp_path / "anime.vae.pt"
    torch.save({"state_dict": other}, vae_file)
    loaded = load_model_uncached(tiny_safetensors, vae=vae_file)
    weight = loaded.components.vae.state_dict()["decoder.conv_out.weight"]
    assert torch.equal(weight, tiny_components.vae.state_dict()["decoder.conv_out.weight"] + 0.5)
    assert loaded.vae_name == "anime.vae.pt" and len(loaded.vae_hash) == 10


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker  # the test's own file: runs side by side do not see each other's

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "emaki-pwned"
    bad = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "payload": _Exploit(marker)}, bad)
    with pytest.raises(UnsafeFileError, match=r"evil\.ckpt.*(system|posix)"):
        load_model_uncached(bad)
    assert not marker.exists()
    legacy = tmp_path / "evil-legacy.pt"
    legacy.write_bytes(b"\x80\x02" + pickle.dumps(_Exploit(marker), protocol=2)[2:])
    with pytest.raises(ModelLoadError):
        load_model_uncached(legacy)
    assert not marker.exists()


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "header"])
def test_corrupt_files_give_a_clear_error(tmp_path, tiny_safetensors, tiny_ckpt, damage):
    data = tiny_safetensors.read_bytes()
    target = tmp_path / "broken.safetensors"
    if damage == "truncate":
        target.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        target.write_bytes(b"this is not a model at all" * 10)
    elif damage == "empty":
        target.write_bytes(b"")
    else:
        target.write_bytes(data[:8] + b"{" + b"\xff" * 40 + data[49:])
    with pytest.raises(ModelLoadError, match="broken.safetensors"):
        load_model_uncached(target)


def test_truncated_ckpt(tmp_path, tiny_ckpt):
    target = tmp_path / "cut.ckpt"
    target.write_bytes(tiny_ckpt.read_bytes()[:100_000])
    with pytest.raises(ModelLoadError, match="cut.ckpt"):
        load_model_uncached(target)


def test_not_a_checkpoint(tmp_path):
    target = tmp_path / "lora.safetensors"
    from safetensors.torch import save_file

    save_file({"lora_unet_x.alpha": torch.ones(1)}, str(target))
    with pytest.raises(ModelLoadError, match="not an SD 1.x checkpoint"):
        load_model_uncached(target)
    with pytest.raises(ModelLoadError, match="no such model"):
        load_model_uncached(tmp_path / "missing.safetensors")


def test_cache_returns_the_same_model_without_reloading(tiny_safetensors):
    cache = ModelCache()
    first = cache.get(tiny_safetensors)
    assert cache.get(tiny_safetensors) is first


def test_read_checkpoint_reads_config_metadata(tiny_safetensors):
    _, config = read_checkpoint(tiny_safetensors)
    assert config == tiny_config()
