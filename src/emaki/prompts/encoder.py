"""Text to CLIP hidden states: chunks, embedding injection, CLIP skip, emphasis (specs §4.5-4.7).

A `PromptEncoder` is bound to one loaded text encoder and its tokenizer. `encode(texts)`
encodes texts *together*, as A1111 encodes all scheduled variants of one prompt together:
the "Original" emphasis restores the mean over the whole batch of one chunk index (§4.6).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from emaki.errors import ParamsError
from emaki.prompts.attention import parse_attention
from emaki.prompts.chunks import Chunk, EmbeddingFix, chunk_prompt, empty_chunk
from emaki.prompts.embedding_hook import EmbeddingLookup, PromptEmbedding

EMPHASIS_MODES = ("Original", "No norm", "Ignore", "None")

MAX_ENCODED_CHUNKS = 2048  # CLIP chunks of one prompt with all its edits: ~0.5 GB at width 768


class PromptEncoder:
    """Encodes prompt texts (already free of AND, editing and network tags) to conditioning.

    * `clip_skip` in A1111 numbering: N > 1 takes `final_layer_norm(hidden_states[-N])` (§4.7).
    * `emphasis`: "Original" (weights, then the mean restored), "No norm" (weights only),
      "Ignore" (brackets parsed, weights dropped), "None" (brackets are literal text) (§4.6).
    * `embeddings`: an `EmbeddingLookup`; matched names are replaced by their vectors (§3.4).

    Outputs have the text encoder's dtype and device. `encode` runs with whatever autograd
    mode the caller is in (training passes gradients through the embedding vectors).
    """

    def __init__(
        self,
        text_encoder: nn.Module,
        tokenizer: Any,
        *,
        clip_skip: int = 1,
        emphasis: str = "Original",
        comma_padding_backtrack: int = 20,
        embeddings: EmbeddingLookup | None = None,
    ) -> None:
        if emphasis not in EMPHASIS_MODES:
            raise ParamsError(
                f"emphasis must be one of {', '.join(EMPHASIS_MODES)}; got {emphasis!r}"
            )
        if clip_skip < 1:
            raise ParamsError(f"clip_skip counts from 1 (A1111 numbering); got {clip_skip}")
        self.text_encoder = text_encoder
        self.tokenizer = tokenizer
        self.clip_skip = clip_skip
        self.emphasis = emphasis
        self.comma_padding_backtrack = comma_padding_backtrack
        self.embeddings = embeddings
        parts = _text_parts(text_encoder)
        self._token_embedding: nn.Module = parts["token_embedding"]
        self._final_layer_norm: nn.Module = parts["final_layer_norm"]

    # --- text -> chunks -------------------------------------------------------------------

    def parse(self, text: str) -> list[tuple[str, float]]:
        """The `(fragment, weight)` runs of `text` under this encoder's emphasis mode."""
        if self.emphasis == "None":
            return [(text, 1.0)]
        return parse_attention(text)

    def chunks(self, text: str) -> tuple[list[Chunk], int]:
        """`(chunks, token_count)` of one prompt text."""
        return chunk_prompt(
            self.parse(text),
            self.tokenizer,
            embeddings=self.embeddings,
            comma_padding_backtrack=self.comma_padding_backtrack,
        )

    def embeddings_in(self, texts: Sequence[str]) -> list[PromptEmbedding]:
        """The embeddings these texts use, each once, in order of appearance (for infotext
        `TI hashes`, specs §3.1)."""
        if self.embeddings is None:
            return []
        found: dict[str, PromptEmbedding] = {}
        for text in dict.fromkeys(texts):
            for chunk in self.chunks(text)[0]:
                for fix in chunk.fixes:
                    found.setdefault(fix.embedding.name, fix.embedding)
        return list(found.values())

    # --- chunks -> tensors ----------------------------------------------------------------

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """`(len(texts), 77*k, dim)`: the texts encoded together (mean restore couples them).

        Texts with fewer chunks than the longest get empty chunks (BOS + 76 EOS).
        Identical texts are run through CLIP once but count with their multiplicity in the
        emphasis mean, as if the batch had been encoded row by row.
        """
        if not texts:
            raise ParamsError("nothing to encode: the list of prompt texts is empty")
        unique = list(dict.fromkeys(texts))
        rows = torch.tensor([unique.index(t) for t in texts])
        chunked = [self.chunks(t)[0] for t in unique]
        n_chunks = max(len(c) for c in chunked)
        if len(texts) * n_chunks > MAX_ENCODED_CHUNKS:
            # Prompt editing multiplies a prompt: 1000 switch points in a 32 k-character prompt
            # would be 1000 texts of 50 chunks, gigabytes of conditioning.
            raise ParamsError(f"prompt: its prompt editing makes {len(texts)} texts of up to {n_chunks} chunks of "
                              f"75 tokens; at most {MAX_ENCODED_CHUNKS} chunks in all can be encoded")
        outputs = []
        for i in range(n_chunks):
            batch = [c[i] if i < len(c) else empty_chunk() for c in chunked]
            z = self.encode_chunks(batch)
            multipliers = torch.tensor([c.multipliers for c in batch], dtype=torch.float32)
            z = z[rows.to(z.device)]
            outputs.append(self._apply_emphasis(z, multipliers[rows].to(z.device)))
        return torch.cat(outputs, dim=1)

    def encode_chunks(self, chunks: Sequence[Chunk]) -> torch.Tensor:
        """Raw CLIP output `(len(chunks), 77, dim)` after CLIP skip, before emphasis."""
        param = next(self.text_encoder.parameters())
        tokens = torch.tensor([c.token_ids for c in chunks], dtype=torch.long, device=param.device)
        fixes = [c.fixes for c in chunks]
        handle = None
        if any(fixes):
            handle = self._token_embedding.register_forward_hook(_injector(fixes))
        try:
            out = self.text_encoder(input_ids=tokens, output_hidden_states=True)
        finally:
            if handle is not None:
                handle.remove()
        if self.clip_skip == 1:
            return out.last_hidden_state
        hidden = out.hidden_states
        if self.clip_skip > len(hidden):
            raise ParamsError(
                f"clip_skip {self.clip_skip} is deeper than this text encoder "
                f"({len(hidden) - 1} layers: at most {len(hidden)})"
            )
        return self._final_layer_norm(hidden[-self.clip_skip])

    def _apply_emphasis(self, z: torch.Tensor, multipliers: torch.Tensor) -> torch.Tensor:
        """Per-token weights on hidden states, §4.6: `z*w`, then `* mean(z)/mean(z*w)`."""
        if self.emphasis in ("Ignore", "None"):
            return z
        dtype = z.dtype
        z32 = z.float()
        weighted = z32 * multipliers[..., None]
        if self.emphasis == "Original":
            weighted = weighted * (z32.mean() / weighted.mean())
        return weighted.to(dtype)


def _injector(batch_fixes: list[list[EmbeddingFix]]) -> Any:
    """A forward hook on the token embedding that writes embedding vectors at their offsets."""

    def hook(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> torch.Tensor:
        rows = []
        for row, fixes in zip(output, batch_fixes, strict=True):
            for fix in fixes:
                vectors = fix.embedding.vectors.to(device=row.device, dtype=row.dtype)
                if vectors.shape[-1] != row.shape[-1]:
                    raise ParamsError(
                        f"embedding {fix.embedding.name!r} has width {vectors.shape[-1]}; "
                        f"this text encoder needs {row.shape[-1]}"
                    )
                n = min(row.shape[0] - fix.offset - 1, vectors.shape[0])
                row = torch.cat([row[: fix.offset + 1], vectors[:n], row[fix.offset + 1 + n :]])
            rows.append(row)
        return torch.stack(rows)

    return hook


def _text_parts(text_encoder: nn.Module) -> dict[str, nn.Module]:
    """Token embedding and final LayerNorm of a CLIP text model (transformers 5 or 4 layout)."""
    model: Any = getattr(text_encoder, "text_model", text_encoder)
    try:
        return {
            "token_embedding": model.embeddings.token_embedding,
            "final_layer_norm": model.final_layer_norm,
        }
    except AttributeError:
        raise ParamsError(
            f"{type(text_encoder).__name__} is not a CLIP text model "
            "(no embeddings.token_embedding / final_layer_norm)"
        ) from None
