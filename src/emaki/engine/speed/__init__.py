"""Opt-in speed features, each an `Extension` recorded in infotext (docs/performance.md):
NGMS (`s_min_uncond`), DeepCache-style feature caching (`cache_interval`), T-GATE-style
cross-attention gating (`gate_step`), token merging (`token_merging_ratio`); and the precision note every run carries."""

from __future__ import annotations

from emaki.engine.run import Extension, Run
from emaki.engine.speed.deepcache import DeepFeatureCache
from emaki.engine.speed.guidance import NegativeGuidanceMinimumSigma, guidance_of
from emaki.engine.speed.tgate import CrossAttentionGate
from emaki.engine.speed.token_merging import TokenMerging
from emaki.params import GenerationParams

__all__ = ["CrossAttentionGate", "DeepFeatureCache", "NegativeGuidanceMinimumSigma", "PrecisionNote",
           "TokenMerging", "guidance_of", "speed_extensions"]


class PrecisionNote(Extension):
    """Infotext `Precision` when the run was not in fp32 (`--precision auto` may have chosen
    bf16 or fp16): the same seed gives a slightly different image in another precision."""

    def infotext_fields(self, run: Run) -> dict[str, object]:
        return {"Precision": run.policy.precision} if run.policy.precision != "fp32" else {}


def speed_extensions(params: GenerationParams) -> list[Extension]:
    """The speed features `params` ask for, plus `PrecisionNote`. Put them before the image
    extensions in `pipeline.plan` (any place works: `guidance_of` sees through wrappers)."""
    extensions: list[Extension] = [PrecisionNote()]
    if params.s_min_uncond > 0:
        extensions.append(NegativeGuidanceMinimumSigma(params.s_min_uncond, params.s_min_uncond_all))
    if params.gate_step > 0:
        extensions.append(CrossAttentionGate(params.gate_step))
    if params.cache_interval > 1:
        extensions.append(DeepFeatureCache(params.cache_interval))
    hires_ratio = (params.token_merging_ratio_hr or params.token_merging_ratio) if params.enable_hr else 0.0
    if params.token_merging_ratio > 0 or hires_ratio > 0:
        extensions.append(TokenMerging(params.token_merging_ratio, hires_ratio=hires_ratio))
    return extensions
