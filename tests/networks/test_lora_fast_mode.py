"""Few-step models arrive as LoRAs (LCM-LoRA, Hyper-SD): plain LoRA keys in diffusers/PEFT
naming, applied with the "LCM" sampler at CFG 1."""

from __future__ import annotations

from pathlib import Path

from safetensors.torch import save_file

from emaki.devices import DevicePolicy
from emaki.engine import Engine
from emaki.params import GenerationParams
from emaki.workspace import Workspace
from tiny_lora import tiny_lora_tensors


def _peft_names(tensors: dict) -> dict:
    """The same pairs as LCM-LoRA ships them: `unet.<path>.lora_A/B.weight` (no alpha: scale 1)."""
    out = {}
    for key, value in tensors.items():
        name, _, part = key.partition(".")
        if part == "alpha" or not name.startswith("lora_unet_"):
            continue
        path = name.removeprefix("lora_unet_").replace("down_blocks_0_attentions_0_proj_in",
                                                        "down_blocks.0.attentions.0.proj_in")
        path = path.replace("mid_block_attentions_0_transformer_blocks_0_attn2_to_k",
                            "mid_block.attentions.0.transformer_blocks.0.attn2.to_k")
        out[f"unet.{path}.{'lora_A' if part.startswith('lora_down') else 'lora_B'}.weight"] = value
    return out


def test_an_lcm_style_lora_applies_with_the_lcm_sampler_at_cfg_1(tmp_path: Path) -> None:
    folder = tmp_path / "home" / "loras"
    folder.mkdir(parents=True)
    save_file(_peft_names(tiny_lora_tensors(seed=3)), str(folder / "lcm-lora-sdv1-5.safetensors"))
    engine = Engine(Workspace(tmp_path / "home"), DevicePolicy.choose("fp32", "cpu", threads=1))
    fast = GenerationParams.create(prompt="1girl", sampler_name="LCM", steps=4, cfg_scale=1.0, seed=5)
    plain = engine.generate(fast, save=False).images[0]
    with_lora = engine.generate(fast.updated(prompt="1girl <lora:lcm-lora-sdv1-5:1>"), save=False).images[0]
    assert with_lora.image.tobytes() != plain.image.tobytes()
    assert "Sampler: LCM" in with_lora.infotext and "CFG scale: 1" in with_lora.infotext
    assert 'Lora hashes: "lcm-lora-sdv1-5: ' in with_lora.infotext
