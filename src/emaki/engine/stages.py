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

from emaki.engine.image_prompts import ImagePrompt
from emaki.engine.output import save_png
from emaki.engine.policy import ensure_embeddings_allowed_in
from emaki.engine.run import Batch, GeneratedImage, Run, StepCallback
from emaki.engine.vae import decode_latents
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
    extract_networks,
)
from emaki.sampling import ImageRNG, Sampler, brownian_noise_sampler
from emaki.sampling.denoiser import CFGDenoiser
from emaki.version import __version__

log = logging.getLogger(__name__)

# --- conditioning ---

def condition(run: Run, embeddings: EmbeddingScan) -> None:
    """Set up the prompt encoder and encode the first batch's prompts (`condition_batch`);
    embeddings (the folders' and those the run's networks bring) are replaced by name — once the
    policy has read the words they encode in every image's prompts; `TI hashes` records the
    ones used."""
    params, parts = run.params, run.model.components
    usable = usable_embeddings(embeddings, run.embeddings, int(parts.text_encoder.config.hidden_size))
    run.encoder = PromptEncoder(parts.text_encoder, parts.tokenizer, clip_skip=params.clip_skip,
                                emphasis=params.emphasis, embeddings=EmbeddingTable(usable, parts.tokenizer))
    ensure_embeddings_allowed_in(params, run.encoder, run.model, run.readings, run.prompts or None)
    condition_batch(run, 0)


def condition_batch(run: Run, batch_index: int) -> None:
    """`run.conds`/`run.unconds` for one batch: its images' prompts (without network tags)
    encoded, unless the batch encoded last had the very same — as every batch has when the
    prompts do not vary image to image, so they are encoded once per run."""
    images = run.batch_prompts(batch_index) or [ImagePrompt.of(run.params)] * run.params.batch_size
    texts = tuple((_text(image.prompt, run), image.negative_prompt) for image in images)
    if texts == run.encoded:
        return
    run.conds, run.unconds = encode_lists(run, [p for p, _ in texts], [n for _, n in texts], run.schedule_steps)
    run.encoded = texts
    run.infotext_networks["TI hashes"] = ti_hashes([*run.conds[0].embeddings, *run.unconds[0].embeddings])


def _text(prompt: str, run: Run) -> str:
    """A prompt without its network tags (the first image's is planned already)."""
    return run.prompt_text if run.prompts and prompt == run.prompts[0].prompt else extract_networks(prompt)[0]


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
    batch = run.params.batch_size
    return encode_lists(run, [prompt] * batch, [negative] * batch, steps)


def encode_lists(run: Run, prompts: list[str], negatives: list[str], steps: int) -> tuple[list, list]:
    """Conditioning of each image's prompt and negative prompt in a batch, over `steps` model
    calls (texts repeated in the batch are encoded once)."""
    assert run.encoder is not None
    dialect = run.params.prompt_dialect
    with torch.inference_mode():
        return (encode_prompts(run.encoder, prompts, steps, dialect=dialect),
                encode_negative_prompts(run.encoder, negatives, steps, dialect=dialect))


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
            conds: tuple[list, list] | None = None, second_pass: bool = False) -> torch.Tensor:
    """One sampling pass: noise from the batch's seeds at the start sigma, on top of `start`
    when given. A second pass (hires fix) passes its own sampler, sigmas and conditioning, and
    says so (`run.second_pass`, for the extensions that treat it apart)."""
    run.second_pass = second_pass
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
    """The batch's pictures (`decode_latents`: whole or in tiles, by the run's policy)."""
    pixels = decode_latents(run.model.components.vae, latents, run.policy)
    pixels = ((pixels + 1) / 2).clamp(0, 1)
    arrays = (pixels.permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype(np.uint8)
    return [Image.fromarray(a) for a in arrays]


def recorded_eta(sampler: Sampler, eta: float | None) -> tuple[str, float] | None:
    """The eta field A1111 writes: only for a sampler that takes eta, and only when it differs
    from that sampler's default (1 for k-diffusion samplers; 0 for DDIM, written `Eta DDIM`)."""
    if eta is None or "eta" not in sampler.option_names:
        return None
    default, key = (0.0, "Eta DDIM") if sampler.timesteps else (1.0, "Eta")
    return None if eta == default else (key, float(eta))


def infotext(run: Run, seed: int, subseed: int, prompts: ImagePrompt | None = None, index: int = 0) -> str:
    """One image's infotext: `prompts` are its own (default: the params'), `index` its place in
    the batch (its embeddings' `TI hashes`)."""
    model = run.model
    networks = dict(run.infotext_networks)
    if index and len(run.conds) > index:
        networks["TI hashes"] = ti_hashes([*run.conds[index].embeddings, *run.unconds[index].embeddings])
    for extension in run.extensions:
        networks |= extension.infotext_fields(run)
    facts = ImageFacts(seed, subseed, model.name, model.hash, model.vae_name, model.vae_hash,
                       uses_ensd=run.sampler.uses_ensd, eta=recorded_eta(run.sampler, run.params.eta),
                       networks=networks, version=f"emaki {__version__}")
    params = prompts.params_for(run.params) if prompts is not None else run.params
    return encode_infotext(params, facts)


def write(run: Run, batch: Batch, images: list[Image.Image], folder: Path | None) -> list[GeneratedImage]:
    """Each image with its infotext (its own prompts); saved as `<folder>/<nnnnn>-<seed>.png`
    unless `folder` is None."""
    made = []
    prompts = run.batch_prompts(batch.index) or [ImagePrompt.of(run.params)] * len(images)
    for index, (image, seed, subseed, own) in enumerate(zip(images, batch.seeds, batch.subseeds, prompts)):
        text = infotext(run, seed, subseed, own, index)
        try:
            path = save_png(image, text, folder, seed) if folder is not None else None
        except OSError as e:
            raise EmakiError(f"could not write the image to {folder}: {e}") from None
        made.append(GeneratedImage(image, seed, subseed, text, path, own.prompt, own.negative_prompt))
    return made
