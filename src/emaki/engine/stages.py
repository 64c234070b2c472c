"""The stages of a generation, each a small function over the shared `Run`:
conditioning → initial latents → denoise → decode → write. `pipeline` plans a run and calls
them in order; extensions (the hires fix's second pass) call them too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from emaki.engine.output import save_png
from emaki.engine.policy import ensure_embeddings_allowed_in
from emaki.engine.run import Batch, GeneratedImage, Run, StepCallback
from emaki.errors import EmakiError
from emaki.infotext_codec import ImageFacts, encode_infotext
from emaki.networks import EmbeddingScan, ti_hashes
from emaki.params import GenerationParams
from emaki.prompts import (
    EmbeddingTable,
    PromptEmbedding,
    PromptEncoder,
    encode_negative_prompts,
    encode_prompts,
)
from emaki.sampling import ImageRNG, Sampler, brownian_noise_sampler
from emaki.sampling.denoiser import CFGDenoiser
from emaki.version import __version__

log = logging.getLogger(__name__)

# --- conditioning ---

def condition(run: Run, embeddings: EmbeddingScan) -> None:
    """Encode both prompts once for every batch (the same texts each time); embeddings (the
    folders' and those the run's networks bring) are replaced by name — once the policy has read
    the words they encode; `TI hashes` records the ones used."""
    params, parts = run.params, run.model.components
    usable = usable_embeddings(embeddings, run.embeddings, int(parts.text_encoder.config.hidden_size))
    run.encoder = PromptEncoder(parts.text_encoder, parts.tokenizer, clip_skip=params.clip_skip,
                                emphasis=params.emphasis, embeddings=EmbeddingTable(usable, parts.tokenizer))
    ensure_embeddings_allowed_in(params, run.encoder, run.model, run.readings)
    run.conds, run.unconds = encode_pair(run, run.prompt_text, params.negative_prompt, run.schedule_steps)
    run.infotext_networks["TI hashes"] = ti_hashes([*run.conds[0].embeddings, *run.unconds[0].embeddings])


def usable_embeddings(scan: EmbeddingScan, brought: Mapping[str, PromptEmbedding],
                      width: int) -> dict[str, PromptEmbedding]:
    """The folders' embeddings plus those the run's networks bring (bundled in LoRA files), as
    A1111 v1.10 registers them: a folder embedding keeps its name, and one of another width than
    the text encoder's is skipped (each with a warning)."""
    usable: dict[str, PromptEmbedding] = dict(scan.loaded)
    for name, embedding in brought.items():
        if name in usable:
            log.warning("embedding %r bundled in a LoRA is not used: the embeddings folder has one of that name",
                        name)
        elif embedding.vectors.shape[-1] != width:
            log.warning("embedding %r bundled in a LoRA is not used: width %d does not fit this model's text "
                        "encoder (%d)", name, embedding.vectors.shape[-1], width)
        else:
            usable[name] = embedding
    return usable


def encode_pair(run: Run, prompt: str, negative: str, steps: int) -> tuple[list, list]:
    """Conditioning of a prompt and its negative for one batch, over `steps` model calls."""
    assert run.encoder is not None
    batch, dialect = run.params.batch_size, run.params.prompt_dialect
    with torch.inference_mode():
        return (encode_prompts(run.encoder, [prompt] * batch, steps, dialect=dialect),
                encode_negative_prompts(run.encoder, [negative] * batch, steps, dialect=dialect))


# --- per batch: initial latents → denoise ---

def batch_seeds(params: GenerationParams, batch_index: int) -> tuple[list[int], list[int]]:
    """A1111's per-image seeds: seed + image index, unless a variation seed is mixed in, in which
    case the seed stays and the variation seed counts up."""
    first = batch_index * params.batch_size
    variation = params.subseed_strength > 0
    seeds = [params.seed + (0 if variation else first + i) for i in range(params.batch_size)]
    subseeds = [params.subseed + first + i for i in range(params.batch_size)]
    return seeds, subseeds


def image_rng(params: GenerationParams, shape: tuple[int, ...], batch: Batch) -> ImageRNG:
    return ImageRNG(shape, batch.seeds, subseeds=batch.subseeds, subseed_strength=params.subseed_strength,
                    seed_resize_from_h=params.seed_resize_from_h, seed_resize_from_w=params.seed_resize_from_w,
                    source=params.rng, eta_noise_seed_delta=params.eta_noise_seed_delta)


def initial_latents(run: Run, batch: Batch) -> torch.Tensor | None:
    for extension in run.extensions:
        start = extension.initial_latents(run, batch)
        if start is not None:
            return start
    return None


def denoise(run: Run, batch: Batch, start: torch.Tensor | None, on_step: StepCallback, *,
            sampler: Sampler | None = None, sigmas: torch.Tensor | None = None, start_sigma: torch.Tensor | None = None,
            conds: tuple[list, list] | None = None) -> torch.Tensor:
    """One sampling pass: noise from the batch's seeds at the start sigma, on top of `start`
    when given. A second pass (hires fix) passes its own sampler, sigmas and conditioning."""
    sampler = sampler or run.sampler
    sigmas = run.sigmas if sigmas is None else sigmas
    start_sigma = run.start_sigma if start_sigma is None else start_sigma
    cond, uncond = conds or (run.conds, run.unconds)
    shape = run.latent_shape if start is None else tuple(start.shape[1:])
    rng = image_rng(run.params, shape, batch)
    guided: Callable[..., torch.Tensor] = CFGDenoiser(run.denoiser, cond, uncond, run.params.cfg_scale)
    for extension in run.extensions:
        guided = extension.wrap_denoiser(run, guided)
    device = run.policy.device
    first = rng.first().to(device)
    for extension in run.extensions:
        first = extension.initial_noise(run, first)
    x = sampler.initial_latent(first, start_sigma, init=start)
    noise = brownian_noise_sampler(x, sigmas, rng.seeds) if sampler.brownian_noise else rng.noise_sampler()
    with torch.inference_mode():
        return sampler(guided, x, sigmas.to(device), noise_sampler=noise, callback=on_step, **run.options)


# --- decode → write ---

def decode(run: Run, latents: torch.Tensor) -> list[Image.Image]:
    vae = run.model.components.vae
    scale = float(vae.config.get("scaling_factor", 0.18215))
    with torch.inference_mode():
        pixels = vae.decode((latents / scale).to(vae.dtype)).sample
    pixels = ((pixels.float() + 1) / 2).clamp(0, 1)
    arrays = (pixels.permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype(np.uint8)
    return [Image.fromarray(a) for a in arrays]


def recorded_eta(sampler: Sampler, eta: float | None) -> tuple[str, float] | None:
    """The eta field A1111 writes: only for a sampler that takes eta, and only when it differs
    from that sampler's default (1 for k-diffusion samplers; 0 for DDIM, written `Eta DDIM`)."""
    if eta is None or "eta" not in sampler.option_names:
        return None
    default, key = (0.0, "Eta DDIM") if sampler.timesteps else (1.0, "Eta")
    return None if eta == default else (key, float(eta))


def infotext(run: Run, seed: int, subseed: int) -> str:
    model = run.model
    networks = dict(run.infotext_networks)
    for extension in run.extensions:
        networks |= extension.infotext_fields(run)
    facts = ImageFacts(seed, subseed, model.name, model.hash, model.vae_name, model.vae_hash,
                       uses_ensd=run.sampler.uses_ensd, eta=recorded_eta(run.sampler, run.params.eta),
                       networks=networks, version=f"emaki {__version__}")
    return encode_infotext(run.params, facts)


def write(run: Run, batch: Batch, images: list[Image.Image], folder: Path | None) -> list[GeneratedImage]:
    """Each image with its infotext; saved as `<folder>/<nnnnn>-<seed>.png` unless `folder` is None."""
    made = []
    for image, seed, subseed in zip(images, batch.seeds, batch.subseeds):
        text = infotext(run, seed, subseed)
        try:
            path = save_png(image, text, folder, seed) if folder is not None else None
        except OSError as e:
            raise EmakiError(f"could not write the image to {folder}: {e}") from None
        made.append(GeneratedImage(image, seed, subseed, text, path))
    return made
