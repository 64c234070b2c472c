"""Things attached to a model: textual-inversion embeddings, hypernetworks (specs §1, §3) and
LoRA/LyCORIS networks (`emaki.networks.lora`).

Embeddings are injected into the token embeddings by `PromptEncoder` through an
`EmbeddingLookup` (`EmbeddingScan.lookup`); hypernetworks act through a diffusers attention
processor (`apply_hypernetworks`); LoRAs replace weights for one run (`apply_loras`). Nothing
global is patched.
"""

from emaki.networks.embeddings import (
    EMBEDDING_SUFFIXES,
    Embedding,
    NotAnEmbedding,
    embedding_from_data,
    load_embedding,
    save_embedding,
)
from emaki.networks.hypernet_attention import (
    AppliedHypernetworks,
    HypernetworkAttnProcessor,
    apply_hypernetworks,
)
from emaki.networks.hypernetworks import (
    ACTIVATIONS,
    Hypernetwork,
    HypernetworkModule,
    dropout_structure_for,
    hypernetwork_from_state,
    load_hypernetwork,
    save_hypernetwork,
)
from emaki.networks.library import (
    EmbeddingLibrary,
    EmbeddingScan,
    HypernetworkLibrary,
    SkippedFile,
    find_hypernetwork_file,
    ti_hashes,
    walk_files,
)
from emaki.networks.lora import (  # after `library`: the LoRA package builds on it
    ChosenLora,
    KeptPatches,
    LoraLibrary,
    LoraNetwork,
    apply_loras,
    load_lora,
    lora_hashes,
    lora_strengths,
    model_targets,
)

__all__ = [
    "ACTIVATIONS",
    "EMBEDDING_SUFFIXES",
    "AppliedHypernetworks",
    "ChosenLora",
    "Embedding",
    "EmbeddingLibrary",
    "EmbeddingScan",
    "Hypernetwork",
    "HypernetworkAttnProcessor",
    "HypernetworkLibrary",
    "HypernetworkModule",
    "KeptPatches",
    "LoraLibrary",
    "LoraNetwork",
    "NotAnEmbedding",
    "SkippedFile",
    "apply_hypernetworks",
    "apply_loras",
    "dropout_structure_for",
    "embedding_from_data",
    "find_hypernetwork_file",
    "hypernetwork_from_state",
    "load_embedding",
    "load_hypernetwork",
    "load_lora",
    "lora_hashes",
    "lora_strengths",
    "model_targets",
    "save_embedding",
    "save_hypernetwork",
    "ti_hashes",
    "walk_files",
]
