"""LoRA and LyCORIS networks (issue 15): read every common file layout, patch a model's weights
for one run with A1111 v1.10's arithmetic, list the files.

* `formats`: file reading (safetensors first, pickles restricted), key → (module, part);
* `targets`: the model's modules under every name LoRA files use (kohya, LDM, PEFT);
* `modules`: the ΔW formula of each module type (LoRA/LoCon, LoHa, LoKr, IA³, full, norm, OFT,
  DoRA);
* `library`: finding files by name or alias, listing rows, loading once per file version;
* `apply`: summing ΔW per weight and patching through the caller's `replace`;
* `extract`: a LoRA from two checkpoints (truncated SVD of their difference), and the LoRA
  names of a single-file checkpoint's keys (what baking in `emaki.merge` patches).
"""

from emaki.networks.lora.apply import (
    AppliedLoras,
    ChosenLora,
    KeptPatches,
    apply_loras,
    lora_hashes,
    lora_strengths,
)
from emaki.networks.lora.extract import (
    CheckpointModule,
    CheckpointNames,
    ExtractedLora,
    LayerFit,
    extract_lora,
    kohya_modules,
    save_extracted_lora,
)
from emaki.networks.lora.formats import (
    LORA_SUFFIXES,
    LoraFile,
    bundled_embedding_data,
    group_modules,
    parsed_metadata,
    read_lora_file,
    read_lora_tensors,
    sd_version,
    split_key,
    trigger_words,
)
from emaki.networks.lora.library import LoraLibrary, LoraNetwork, file_kind, load_lora
from emaki.networks.lora.modules import (
    IA3,
    MODULE_TYPES,
    FullDiff,
    Hadamard,
    Kronecker,
    LoraUpDown,
    NetworkModule,
    NormDiff,
    Orthogonal,
    fit_to,
    module_type,
    network_module,
    rebuild_tucker,
    weight_decompose,
)
from emaki.networks.lora.targets import LayerTargets, Target, model_targets, sd15_targets

__all__ = [
    "IA3",
    "LORA_SUFFIXES",
    "MODULE_TYPES",
    "AppliedLoras",
    "CheckpointModule",
    "CheckpointNames",
    "ChosenLora",
    "ExtractedLora",
    "FullDiff",
    "Hadamard",
    "KeptPatches",
    "Kronecker",
    "LayerFit",
    "LayerTargets",
    "LoraFile",
    "LoraLibrary",
    "LoraNetwork",
    "LoraUpDown",
    "NetworkModule",
    "NormDiff",
    "Orthogonal",
    "Target",
    "apply_loras",
    "bundled_embedding_data",
    "extract_lora",
    "file_kind",
    "fit_to",
    "group_modules",
    "kohya_modules",
    "load_lora",
    "lora_hashes",
    "lora_strengths",
    "model_targets",
    "module_type",
    "network_module",
    "parsed_metadata",
    "read_lora_file",
    "read_lora_tensors",
    "rebuild_tucker",
    "save_extracted_lora",
    "sd15_targets",
    "sd_version",
    "split_key",
    "trigger_words",
    "weight_decompose",
]
