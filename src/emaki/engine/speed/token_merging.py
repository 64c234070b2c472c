"""Token merging for Stable Diffusion (Bolya & Hoffman 2023, "Token Merging for Stable
Diffusion"; A1111's `token_merging_ratio`, which runs the `tomesd` package): before each
self-attention at full latent resolution, the most redundant tokens are averaged into similar
ones, attention runs on fewer tokens, and its output is copied back to every token merged:

    split:   one "dst" token in each 2×2 cell of the token grid (chosen at random), "src" the rest
    match:   each src token's most similar dst token, by cosine similarity of the block's input
    merge:   the r = ⌊N·ratio⌋ best-matched src tokens are averaged into their dst tokens
    attn1(x) ≈ unmerge(attn1(merge(norm1(x))))        (a merged token takes its dst's output)

As in A1111: self-attention only (not cross-attention or the feed-forward), and only in the
blocks whose token count is the latent's (tomesd's `max_downsample=1`). The random dst choice
comes from a generator seeded by the run's seed, the sampling pass and the denoiser call, and
every UNet call of one denoiser call draws the same choices, so the prompt's and the negative
prompt's rows are merged alike whether they share a UNet call or not (tomesd turns randomness
off for odd batches for that reason).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from diffusers.models.attention import BasicTransformerBlock

from emaki.engine.patching import ModelHandle
from emaki.engine.run import Run
from emaki.engine.speed.patches import Forward, PassCounting, hidden_states, replace_forward

CELL = 2  # dst tokens: one per CELL×CELL square of the token grid (tomesd's sx = sy = 2)


class TokenMatch:
    """Which tokens one self-attention call merges. `src`/`dst` partition the N tokens (the
    same for every row); per row (B, ·), `kept` and `merged` index `src`, `into` the dst token
    each merged one joins. Merging and unmerging copy whole token rows by flat index
    (`index_select`/`index_add_`/`index_copy_`): the element-wise `gather`/`scatter_reduce` of
    the same thing took longer on a CPU than the attention it saves at 512²."""

    def __init__(self, tokens: int, src: torch.Tensor, dst: torch.Tensor, kept: torch.Tensor, merged: torch.Tensor,
                 into: torch.Tensor) -> None:
        self.tokens, self.src, self.dst, self.kept, self.merged, self.into = tokens, src, dst, kept, merged, into
        rows = kept.shape[0]
        first = torch.arange(rows, device=src.device).unsqueeze(1)  # each row's first token, in the flat (B·N) view
        self.kept_rows = (first * tokens + src[kept]).flatten()
        self.merged_rows = (first * tokens + src[merged]).flatten()
        self.dst_rows = (first * tokens + dst.unsqueeze(0)).flatten()
        self.into_rows = (first * dst.numel() + into).flatten()  # in the flat (B·D) dst tokens
        self.group_sizes = 1 + torch.bincount(self.into_rows, minlength=rows * dst.numel())

    def merge(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, C) → (B, N − r, C): the kept src tokens, then each dst averaged with the src
        tokens merged into it."""
        rows, channels = x.shape[0], x.shape[2]
        flat = x.reshape(-1, channels)
        kept = flat.index_select(0, self.kept_rows).view(rows, -1, channels)
        sums = flat.index_select(0, self.dst_rows)
        sums.index_add_(0, self.into_rows, flat.index_select(0, self.merged_rows))
        dst = (sums / self.group_sizes.unsqueeze(1).to(x.dtype)).view(rows, -1, channels)
        return torch.cat([kept, dst], dim=1)

    def unmerge(self, y: torch.Tensor) -> torch.Tensor:
        """(B, N − r, C) → (B, N, C): each token back in its place, a merged one with its dst's value."""
        rows, channels = y.shape[0], y.shape[2]
        n_kept = self.kept.shape[1]
        kept = y[:, :n_kept].reshape(-1, channels)
        dst = y[:, n_kept:].reshape(-1, channels)
        out = y.new_empty(rows * self.tokens, channels)
        out.index_copy_(0, self.dst_rows, dst)
        out.index_copy_(0, self.kept_rows, kept)
        out.index_copy_(0, self.merged_rows, dst.index_select(0, self.into_rows))
        return out.view(rows, self.tokens, channels)


def split_cells(height: int, width: int, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(src, dst) token indices of a height×width grid (row-major): one dst per whole CELL×CELL
    cell, at a random offset (the top-left one without a generator); tokens of a last, partial
    row or column of cells are all src."""
    rows, cols = height // CELL, width // CELL
    offsets = (torch.randint(CELL * CELL, (rows, cols), generator=generator) if generator is not None
               else torch.zeros(rows, cols, dtype=torch.long))
    y = torch.arange(rows).unsqueeze(1) * CELL + offsets // CELL
    x = torch.arange(cols).unsqueeze(0) * CELL + offsets % CELL
    dst = (y * width + x).flatten()
    is_src = torch.ones(height * width, dtype=torch.bool)
    is_src[dst] = False
    return is_src.nonzero().flatten(), dst


def match_tokens(metric: torch.Tensor, height: int, width: int, ratio: float,
                 generator: torch.Generator | None) -> TokenMatch | None:
    """Bipartite soft matching of the tokens `metric` (B, N, C) of a height×width grid: the
    ⌊N·ratio⌋ src tokens most similar to a dst token are merged into it (at most every src
    token); None when there is nothing to merge."""
    tokens = metric.shape[1]
    src, dst = (index.to(metric.device) for index in split_cells(height, width, generator))
    r = min(int(tokens * ratio), src.numel())
    if r <= 0 or dst.numel() == 0:
        return None
    unit = metric / metric.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    scores = unit[:, src] @ unit[:, dst].transpose(1, 2)  # cosine similarity, (B, S, D)
    best, best_dst = scores.max(dim=-1)
    order = best.argsort(dim=-1, descending=True)
    merged = order[:, :r]
    return TokenMatch(tokens, src, dst, kept=order[:, r:], merged=merged, into=best_dst.gather(1, merged))


def grid_of(tokens: int, latent: tuple[int, int], max_downsample: int) -> tuple[int, int] | None:
    """The token grid (height, width) of a layer with `tokens` tokens in a UNet run on a
    `latent`-sized input, if it is at most `max_downsample` times smaller than the latent."""
    for factor in range(1, max_downsample + 1):
        height, width = math.ceil(latent[0] / factor), math.ceil(latent[1] / factor)
        if height * width == tokens:
            return height, width
    return None


def self_attention_blocks(unet: torch.nn.Module) -> dict[str, BasicTransformerBlock]:
    """The UNet's transformer blocks whose `attn1` is a self-attention."""
    return {name: module for name, module in unet.named_modules()
            if isinstance(module, BasicTransformerBlock) and not module.only_cross_attention}


class TokenMerging(PassCounting):
    """`--token-merging R`: merge R of the tokens before self-attention at full resolution; in
    a hires fix's second pass, `hires_ratio` of them (A1111's `token_merging_ratio_hr`, which
    falls back to R; 0 in either pass: that pass runs unmerged)."""

    def __init__(self, ratio: float, *, hires_ratio: float = 0.0, max_downsample: int = 1,
                 random_dst: bool = True) -> None:
        super().__init__()
        self.ratio, self.max_downsample, self.random_dst = ratio, max_downsample, random_dst
        self.first_ratio, self.hires_ratio = ratio, hires_ratio
        self.seed = 0
        self.passes = 0  # sampling passes of the run so far (each batch's, the hires passes)
        self.calls = 0  # denoiser calls of this pass
        self.latent: tuple[int, int] = (0, 0)  # height, width of the UNet call under way
        self.generator: torch.Generator | None = None
        self.matches: dict[str, TokenMatch | None] = {}  # by block: its self-attention's merge

    def plan(self, run: Run) -> None:
        self.seed = run.params.seed

    def patch_model(self, run: Run, handle: ModelHandle) -> None:
        unet = handle.components.unet
        handle.on_exit(unet.register_forward_pre_hook(self._unet_starts, with_kwargs=True).remove)
        for name, block in self_attention_blocks(unet).items():
            handle.on_exit(block.register_forward_pre_hook(self._matcher(name), with_kwargs=True).remove)
            replace_forward(handle, block.attn1, self._merged(name))

    def start_pass(self, run: Run, denoiser: Callable[..., torch.Tensor]) -> None:
        self.passes += 1
        self.calls = 0
        self.ratio = self.hires_ratio if run.second_pass else self.first_ratio

    def before_call(self) -> None:
        self.calls += 1

    def _unet_starts(self, unet: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Each UNet call of a denoiser call draws the same dst choices (its own generator)."""
        sample = args[0] if args else kwargs["sample"]
        self.latent = (int(sample.shape[-2]), int(sample.shape[-1]))
        self.generator = None
        if self.random_dst:
            mixed = (self.seed * 1_000_003 + self.passes * 10_007 + self.calls) % 2**63
            self.generator = torch.Generator().manual_seed(mixed)

    def _matcher(self, name: str) -> Callable[..., None]:
        def match(block: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            x = hidden_states(args, kwargs)
            grid = grid_of(x.shape[1], self.latent, self.max_downsample) if x.ndim == 3 and self.ratio else None
            self.matches[name] = (match_tokens(x, *grid, self.ratio, self.generator)
                                  if grid is not None else None)

        return match

    def _merged(self, name: str) -> Callable[[Forward], Forward]:
        def make(forward: Forward) -> Forward:
            def patched(*args: Any, **kwargs: Any) -> Any:
                found = self.matches.pop(name, None)
                if found is None:
                    return forward(*args, **kwargs)
                x = found.merge(hidden_states(args, kwargs))
                if args:
                    return found.unmerge(forward(x, *args[1:], **kwargs))
                return found.unmerge(forward(**(kwargs | {"hidden_states": x})))

            return patched

        return make

    def infotext_fields(self, run: Run) -> dict[str, object]:
        """A1111's fields: the ratio when not 0, and with a hires fix its second pass's."""
        fields: dict[str, object] = {"Token merging ratio": self.first_ratio} if self.first_ratio else {}
        return fields | ({"Token merging ratio hr": self.hires_ratio} if self.hires_ratio else {})
