"""The prompt language of A1111 v1.10.1 (and NovelAI's braces), from text to conditioning.

Order of operations (specs §4.1): `extract_networks` → `parse_and` → `prompt_schedules` →
`parse_attention` → `tokenize_chunks` → `PromptEncoder` (CLIP skip, emphasis). The engine
calls `encode_prompts` / `encode_negative_prompts`, which run the steps after the first.
"""

from emaki.prompts.attention import parse_attention
from emaki.prompts.chunks import Chunk, EmbeddingFix, chunk_prompt, empty_chunk, tokenize_chunks
from emaki.prompts.composable import parse_and
from emaki.prompts.conditioning import (
    DIALECTS,
    ComposableConditioning,
    ScheduledConditioning,
    encode_negative_prompts,
    encode_prompts,
    to_a1111,
)
from emaki.prompts.embedding_hook import (
    EmbeddingLookup,
    EmbeddingTable,
    NamedVectors,
    PromptEmbedding,
)
from emaki.prompts.encoder import EMPHASIS_MODES, PromptEncoder
from emaki.prompts.networks import NetworkTag, extract_networks
from emaki.prompts.novelai import from_novelai
from emaki.prompts.schedule import prompt_schedules
from emaki.prompts.token_counter import ChunkView, TokenCount, count_tokens

__all__ = [
    "DIALECTS",
    "EMPHASIS_MODES",
    "Chunk",
    "ChunkView",
    "ComposableConditioning",
    "EmbeddingFix",
    "EmbeddingLookup",
    "EmbeddingTable",
    "NamedVectors",
    "NetworkTag",
    "PromptEmbedding",
    "PromptEncoder",
    "ScheduledConditioning",
    "TokenCount",
    "chunk_prompt",
    "count_tokens",
    "empty_chunk",
    "encode_negative_prompts",
    "encode_prompts",
    "extract_networks",
    "from_novelai",
    "parse_and",
    "parse_attention",
    "prompt_schedules",
    "to_a1111",
    "tokenize_chunks",
]
