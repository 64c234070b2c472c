"""Which merge block every SD 1.x key belongs to: the 25 MBW UNet blocks, text encoder, VAE.

The table (one place, used by the merger and by lineage):

| key (after `model.diffusion_model.`, or its flattened `model_ema.` copy) | block |
|---|---|
| `input_blocks.N.*` (N = 0..11)                                          | `IN00`..`IN11` |
| `time_embed.*` (the timestep MLP)                                        | `IN00` |
| `middle_block.*`                                                         | `M00` |
| `output_blocks.N.*` (N = 0..11)                                          | `OUT00`..`OUT11` |
| `out.*` (final norm + conv)                                              | `OUT11` |
| `cond_stage_model.*` (CLIP text encoder)                                 | `TE` |
| `first_stage_model.*` (VAE)                                              | `VAE` |
| anything else (`model_ema.decay`, unknown keys)                          | none: the base α |

Merge tools disagree about the two UNet keys outside the numbered blocks. emaki puts them with
the block on the same side of the UNet: `time_embed` reads the UNet's inputs (the timestep) just
as `input_blocks.0` (`conv_in`) reads the latent, so both are the UNet's entry, IN00; `out.*`
turns the last output block's features into the prediction, so it is the UNet's exit, OUT11.
The text encoder and the VAE are not among the 25 and get their own α.
"""

from __future__ import annotations

import re

from emaki.models.convert import (
    EMA_PREFIX,
    POSITION_IDS,
    TEXT_ENCODER_PREFIX,
    UNET_PREFIX,
    VAE_PREFIX,
)

#: The 25 UNet blocks in the order of a 25-value `--blocks` list.
UNET_BLOCKS: tuple[str, ...] = (
    *(f"IN{i:02d}" for i in range(12)),
    "M00",
    *(f"OUT{i:02d}" for i in range(12)),
)
TEXT_ENCODER = "TE"
VAE = "VAE"
#: Every block lineage reports, in display order.
ALL_BLOCKS: tuple[str, ...] = (*UNET_BLOCKS, TEXT_ENCODER, VAE)

_UNET_KEY = re.compile(
    r"^(input_blocks|output_blocks)\.(\d+)\.|^(middle_block)\.|^(time_embed)\.|^(out)\."
)
# `model_ema.` keys are the UNet key after "model." with every dot removed:
# `diffusion_model.input_blocks.1.0.in_layers...` -> `diffusion_modelinput_blocks10in_layers...`.
# The sub-module index after the block number is always one digit and is followed by a
# letter, so the greedy block number is unambiguous (`...blocks110in_layers` = block 11, sub 0).
_EMA_KEY = re.compile(
    r"^model_ema\.diffusion_model(?:(input_blocks|output_blocks)(\d+)\d[a-z]|(middle_block)|(time_embed)\d|(out)\d)"
)


def _unet_block(kind: str | None, index: str | None, middle: str | None, time: str | None) -> str:
    if middle:
        return "M00"
    if time:
        return "IN00"
    if kind is None:
        return "OUT11"  # out.*
    return f"{'IN' if kind == 'input_blocks' else 'OUT'}{int(index or 0):02d}"


def block_of(key: str) -> str | None:
    """The merge block of an SD 1.x checkpoint key, or None for keys outside every block.

    >>> block_of("model.diffusion_model.input_blocks.4.1.proj_in.weight")
    'IN04'
    >>> unet = "model.diffusion_model."
    >>> block_of(unet + "time_embed.0.weight"), block_of(unet + "out.2.bias")
    ('IN00', 'OUT11')
    >>> block_of("model_ema.diffusion_modeloutput_blocks111transformer_blocks0attn1to_kweight")
    'OUT11'
    >>> block_of("model_ema.diffusion_modelinput_blocks10in_layers0weight")
    'IN01'
    >>> block_of("cond_stage_model.transformer.text_model.final_layer_norm.weight")
    'TE'
    >>> block_of("first_stage_model.decoder.conv_in.weight"), block_of("betas")
    ('VAE', None)
    """
    if key.startswith(UNET_PREFIX):
        m = _UNET_KEY.match(key[len(UNET_PREFIX) :])
        if not m:
            return None
        kind, index, middle, time, _out = m.groups()
        return _unet_block(kind, index, middle, time)
    if key.startswith(TEXT_ENCODER_PREFIX):
        return TEXT_ENCODER
    if key.startswith(VAE_PREFIX):
        return VAE
    if key.startswith(EMA_PREFIX):
        m = _EMA_KEY.match(key)
        if not m:
            return None
        kind, index, middle, time, _out = m.groups()
        return _unet_block(kind, index, middle, time)
    return None


def is_merged_key(key: str) -> bool:
    """A1111's rule (specs §7.1): keys containing 'model' are merged, except the position ids."""
    return "model" in key and key != POSITION_IDS
