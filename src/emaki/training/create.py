"""New embeddings and hypernetworks, made as A1111's "Create embedding" / "Create hypernetwork" make
them, for the model they will be trained on."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from emaki.errors import ParamsError
from emaki.models.tokenizer import tokenizable
from emaki.networks.embeddings import Embedding
from emaki.networks.hypernet_attention import attention_layers
from emaki.networks.hypernetworks import Hypernetwork


def init_vectors(text_encoder: nn.Module, tokenizer: Any, init_text: str, count: int) -> torch.Tensor:
    """`count` vectors from the token embeddings of `init_text` (A1111: the text is cut to
    `count` tokens and vector i copies token i·len/count); an empty text gives zeros."""
    model: Any = getattr(text_encoder, "text_model", text_encoder)
    table: nn.Embedding = model.embeddings.token_embedding
    vectors = torch.zeros(count, table.weight.shape[1], dtype=torch.float32)
    if not init_text:
        return vectors
    ids = tokenizer([tokenizable(init_text)], add_special_tokens=False, truncation=True,
                    max_length=count)["input_ids"][0]
    if not ids:
        return vectors
    with torch.no_grad():
        embedded = table.weight[torch.tensor(ids, device=table.weight.device)].float().cpu()
    for i in range(count):
        vectors[i] = embedded[i * len(ids) // count]
    return vectors


def attention_widths(unet: nn.Module, context_width: int) -> list[int]:
    """The context widths a hypernetwork acts on in this UNet: the text context first, then the
    self-attention widths (A1111's default 768, 320, 640, 1280 on SD 1.x)."""
    widths = {int(layer.to_k.in_features) for layer in attention_layers(unet).values()}
    return [context_width] + sorted(widths - {context_width})


def new_embedding(name: str, text_encoder: nn.Module, tokenizer: Any, *, init_text: str = "*",
                  num_vectors_per_token: int = 1) -> Embedding:
    if not 1 <= num_vectors_per_token <= 75:
        raise ParamsError(f"num_vectors_per_token: expected 1 to 75, got {num_vectors_per_token}")
    vectors = init_vectors(text_encoder, tokenizer, init_text, num_vectors_per_token)
    return Embedding(name=name, vectors=vectors, step=0)


def new_hypernetwork(name: str, sizes: Sequence[int], *, layer_structure: Sequence[float], activation_func: str,
                     weight_initialization: str, add_layer_norm: bool, dropout_structure: Sequence[float] | None,
                     seed: int = 0) -> Hypernetwork:
    return Hypernetwork.create(
        name, sizes, layer_structure=layer_structure, activation_func=activation_func,
        weight_initialization=weight_initialization, add_layer_norm=add_layer_norm,
        use_dropout=dropout_structure is not None and any(dropout_structure),
        dropout_structure=dropout_structure, generator=torch.Generator().manual_seed(seed))


def target_path(folder: Path, name: str, suffix: str, *, overwrite: bool) -> Path:
    """`<folder>/<name><suffix>`, refused when it exists and `overwrite` is off."""
    path = folder / f"{name}{suffix}"
    if path.exists() and not overwrite:
        raise ParamsError(f"{path}: already exists; overwrite replaces it (--overwrite), resume goes on "
                          "training it (--resume)")
    return path


def create_embedding_file(folder: Path, model: Any, name: str, *, init_text: str = "*",
                          num_vectors_per_token: int = 1, overwrite: bool = False,
                          save_format: str = "pt") -> Path:
    """A1111's "Create embedding": a step-0 embedding file for `model`, in `folder`."""
    from emaki.networks.embeddings import save_embedding
    from emaki.training.params import sanitize_name

    clean = _clean_name(name, sanitize_name)
    from emaki.safety import ensure_allowed

    ensure_allowed(init_text)  # the new vectors are copies of these words' token vectors
    parts = model.components
    embedding = new_embedding(clean, parts.text_encoder, parts.tokenizer, init_text=init_text,
                              num_vectors_per_token=num_vectors_per_token)
    embedding.sd_checkpoint, embedding.sd_checkpoint_name = model.hash, model.name
    suffix = {"pt": ".pt", "safetensors": ".safetensors"}.get(save_format)
    if suffix is None:
        raise ParamsError(f"save_format: expected pt or safetensors, got {save_format!r}")
    folder.mkdir(parents=True, exist_ok=True)
    return save_embedding(embedding, target_path(folder, clean, suffix, overwrite=overwrite))


def create_hypernetwork_file(folder: Path, model: Any, name: str, *, sizes: Sequence[int] | None = None,
                             layer_structure: Sequence[float] = (1.0, 2.0, 1.0), activation_func: str = "linear",
                             weight_initialization: str = "Normal", add_layer_norm: bool = False,
                             dropout_structure: Sequence[float] | None = None, overwrite: bool = False,
                             seed: int = 0) -> Path:
    """A1111's "Create hypernetwork": a step-0 hypernetwork file for `model`, in `folder`."""
    from emaki.networks.hypernetworks import save_hypernetwork
    from emaki.training.params import sanitize_name

    clean = _clean_name(name, sanitize_name)
    parts = model.components
    width = int(parts.text_encoder.config.hidden_size)
    network = new_hypernetwork(clean, list(sizes) if sizes else attention_widths(parts.unet, width),
                               layer_structure=layer_structure, activation_func=activation_func,
                               weight_initialization=weight_initialization, add_layer_norm=add_layer_norm,
                               dropout_structure=dropout_structure, seed=seed)
    network.sd_checkpoint, network.sd_checkpoint_name = model.hash, model.name
    folder.mkdir(parents=True, exist_ok=True)
    return save_hypernetwork(network, target_path(folder, clean, ".pt", overwrite=overwrite))


def _clean_name(name: str, sanitize: Any) -> str:
    clean = str(sanitize(name))
    if not any(c.isalnum() for c in clean):
        raise ParamsError(f"name: {name!r} has no letter or digit (A1111 keeps only letters, digits and ._- )")
    from emaki.safety import ensure_allowed

    ensure_allowed(clean)  # the name becomes a prompt word
    return clean
