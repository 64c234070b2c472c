"""Streaming checkpoint merger, merge recipes and lineage (specs/FORMATS.md §6-7).

from emaki.merge import MergeRecipe, InputRef, merge
recipe = MergeRecipe("weighted-sum", InputRef("a.safetensors"), InputRef("b.ckpt"),
                         alpha=0.3, dtype="fp16")
result = merge(recipe, "out.safetensors")        # result.recipe has the inputs' sha256 filled in

from emaki.merge import trace_lineage
report = trace_lineage("unknown.safetensors", ["a.safetensors", "b.ckpt"])

from emaki.merge import LoraRef                  # bake LoRAs into the result (after the merge)
recipe = MergeRecipe("no-interpolation", InputRef("a.safetensors"), dtype="fp16",
                     loras=(LoraRef("detail.safetensors", te=0.8, unet=0.8),))
"""

from emaki.merge.blocks import ALL_BLOCKS, UNET_BLOCKS, block_of
from emaki.merge.lineage import LineageResult, trace_lineage
from emaki.merge.merger import MergeResult, merge
from emaki.merge.recipe import (
    InputRef,
    LoraRef,
    MergeError,
    MergeRecipe,
    load_recipe,
    save_recipe,
)
from emaki.merge.sources import open_source

__all__ = [
    "ALL_BLOCKS",
    "UNET_BLOCKS",
    "InputRef",
    "LineageResult",
    "LoraRef",
    "MergeError",
    "MergeRecipe",
    "MergeResult",
    "block_of",
    "load_recipe",
    "merge",
    "open_source",
    "save_recipe",
    "trace_lineage",
]
