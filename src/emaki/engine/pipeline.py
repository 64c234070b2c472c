"""txt2img: params → model (cached) → conditioning → sampler → VAE → PNG with infotext.

Reads top to bottom like the diffusers pipeline: check inputs, encode the prompts, prepare the
latents, denoise, decode, write.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import emaki
from emaki.devices import DevicePolicy
from emaki.errors import Interrupted, ParamsError
from emaki.home import embedding_folders, hash_cache_path, hypernetwork_folders, outputs_dir
from emaki.hires import LATENT_UPSCALERS, check_upscaler, hires_steps, target_size, upscale_images, upscale_latents
from emaki.img2img import default_size, encode_image, fit_image, open_init_image
from emaki.infotext import build_infotext
from emaki.models.hashes import HashCache
from emaki.models.loader import DEFAULT_CACHE, LoadedModel, ModelCache
from emaki.models.resolve import resolve_model
from emaki.networks import (
    EmbeddingLibrary,
    Hypernetwork,
    HypernetworkLibrary,
    apply_hypernetworks,
    ti_hashes,
)
from emaki.output import dated_folder, save_png
from emaki.params import MAX_SEED, GenerationParams
from emaki.prompts import PromptEncoder, encode_negative_prompts, encode_prompts, extract_networks
from emaki.safety import ensure_allowed
from emaki.sampling import (
    ImageRNG,
    Sampler,
    brownian_noise_sampler,
    get_sampler,
    img2img_sigmas,
    parse_sampler_name,
    sigmas_for,
)
from emaki.sampling.denoiser import CFGDenoiser, DiscreteEpsDenoiser
from emaki.sampling.progress import StepInfo


@dataclass(frozen=True)
class GenerationProgress:
    """One sampler step of one batch: what progress bars and previews are made of."""

    batch: int
    batches: int
    step: int
    steps: int
    latent: torch.Tensor
    model: LoadedModel


@dataclass
class GeneratedImage:
    image: Image.Image
    seed: int
    infotext: str
    path: Path | None = None


@dataclass
class GenerationResult:
    params: GenerationParams  # as run: the seed resolved, the size filled in
    model: LoadedModel
    images: list[GeneratedImage] = field(default_factory=list)


ProgressCallback = Callable[[GenerationProgress], None]


def resolve_seed(seed: int) -> int:
    return secrets.randbelow(MAX_SEED + 1) if seed == -1 else seed


def native_size(model: LoadedModel) -> int:
    config = model.components.config
    return int(config.unet.get("sample_size") or 64) * config.vae_scale_factor


def infotext_for(params: GenerationParams, model: LoadedModel, seed: int, subseed: int,
                 sampler_name: str, schedule: str, uses_ensd: bool, prompt: str, *,
                 embeddings_hashes: str | None = None, hypernetwork: Hypernetwork | None = None,
                 eta: dict[str, float] | None = None) -> str:
    """The v1.10.1 field order (specs/FORMATS.md §5.1); `TI hashes` and the `Hypernet` fields
    (of the setting/flag hypernetwork, `params.hypernetwork`) among the extras."""
    variation = params.subseed_strength > 0
    resized = params.seed_resize_from_w > 0 and params.seed_resize_from_h > 0
    fields = {
        "Steps": params.steps,
        "Sampler": sampler_name,
        "Schedule type": schedule,
        "CFG scale": float(params.cfg_scale),
        "Seed": seed,
        "Size": f"{params.width}x{params.height}",
        "Model hash": model.hash,
        "Model": model.name,
        "VAE hash": model.vae_hash,
        "VAE": model.vae_name,
        "Variation seed": subseed if variation else None,
        "Variation seed strength": float(params.subseed_strength) if variation else None,
        "Seed resize from": f"{params.seed_resize_from_w}x{params.seed_resize_from_h}" if resized else None,
        "Denoising strength": float(params.denoising_strength) if params.init_image or params.enable_hr else None,
        "Clip skip": params.clip_skip if params.clip_skip > 1 else None,
        "ENSD": params.eta_noise_seed_delta if params.eta_noise_seed_delta and uses_ensd else None,
        "RNG": params.rng if params.rng != "GPU" else None,
        **hires_fields(params),
        "TI hashes": embeddings_hashes,  # networks (issue 6)
        "Emphasis": params.emphasis if params.emphasis != "Original" else None,
        "Hypernet": params.hypernetwork if params.hypernetwork else None,  # networks (issue 6)
        "Hypernet hash": hypernetwork.shorthash if params.hypernetwork and hypernetwork else None,
        "Hypernet strength": (float(params.hypernetwork_strength)
                              if params.hypernetwork and params.hypernetwork_strength != 1 else None),
        "Prompt dialect": "NovelAI" if params.prompt_dialect == "novelai" else None,
        **(eta or {}),  # `recorded_eta`
        "Version": f"emaki {emaki.__version__}",
    }
    return build_infotext(prompt, params.negative_prompt, fields)


def hires_fields(params: GenerationParams) -> dict[str, object]:
    """The `Hires ...` fields A1111 writes for a hires-fix run (none without one)."""
    if not params.enable_hr:
        return {}
    resized = params.hr_resize_x or params.hr_resize_y
    fields: dict[str, object] = {
        "Hires resize": f"{params.hr_resize_x}x{params.hr_resize_y}" if resized else None,
        "Hires upscale": None if resized else float(params.hr_scale),
        "Hires steps": params.hr_second_pass_steps or None,
        "Hires upscaler": params.hr_upscaler,
        "Hires sampler": params.hr_sampler_name,
        "Hires prompt": params.hr_prompt or None,
        "Hires negative prompt": params.hr_negative_prompt or None,
    }
    return {k: v for k, v in fields.items() if v is not None}


def recorded_eta(sampler: Sampler, eta: float | None) -> dict[str, float]:
    """The eta field A1111 writes: only for a sampler that takes eta, and only when it differs
    from that sampler's default (1 for k-diffusion samplers; 0 for DDIM, written `Eta DDIM`)."""
    if eta is None or "eta" not in sampler.option_names:
        return {}
    default, key = (0.0, "Eta DDIM") if sampler.timesteps else (1.0, "Eta")
    return {} if eta == default else {key: float(eta)}


def _prepare(model: LoadedModel, policy: DevicePolicy) -> None:
    parts = model.components
    parts.unet.to(policy.device)
    parts.vae.to(policy.device)
    parts.text_encoder.to(policy.device)
    if policy.channels_last:
        parts.unet.to(memory_format=torch.channels_last)


def _decode(model: LoadedModel, latents: torch.Tensor, policy: DevicePolicy) -> list[Image.Image]:
    vae = model.components.vae
    scale = float(vae.config.get("scaling_factor", 0.18215))
    with torch.inference_mode():
        pixels = vae.decode((latents / scale).to(vae.dtype)).sample
    pixels = ((pixels.float() + 1) / 2).clamp(0, 1)
    arrays = (pixels.permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype(np.uint8)
    return [Image.fromarray(a) for a in arrays]


# --- networks (issue 6): embeddings and hypernetworks found in folders, kept between runs ---
DEFAULT_EMBEDDINGS = EmbeddingLibrary()
DEFAULT_HYPERNETWORKS = HypernetworkLibrary()


def text_encoder_width(model: LoadedModel) -> int:
    return int(model.components.text_encoder.get_input_embeddings().weight.shape[-1])


def hypernetworks_for(params: GenerationParams, networks: list, folders: list[Path],
                      library: HypernetworkLibrary = DEFAULT_HYPERNETWORKS) -> list[tuple[Hypernetwork, float]]:
    """`<hypernet:name:strength>` tags of the prompt, then the setting/flag hypernetwork
    (specs §1.5), each loaded by file stem; other kinds of tags are ignored."""
    chosen = [(tag.name, tag.multiplier) for tag in networks if tag.kind == "hypernet"]
    if params.hypernetwork:
        chosen.append((params.hypernetwork, params.hypernetwork_strength))
    return [(library.load(name, folders), strength) for name, strength in chosen]
# --- end networks ---


def generate(
    params: GenerationParams,
    *,
    out_dir: Path | None = None,
    save: bool = True,
    progress: ProgressCallback | None = None,
    interrupt: threading.Event | None = None,
    skip: threading.Event | None = None,
    policy: DevicePolicy | None = None,
    cache: ModelCache = DEFAULT_CACHE,
    embeddings_dirs: list[Path] | None = None,
    hypernetworks_dirs: list[Path] | None = None,
) -> GenerationResult:
    """Make `params.batch_size × params.n_iter` images; write them unless `save=False`.

    `interrupt` stops the whole run (raises `Interrupted`); `skip` drops the batch being sampled
    and goes on with the next one (A1111's Skip), and is cleared when taken.
    Embeddings come from `embeddings_dirs` and hypernetworks from `hypernetworks_dirs`
    (default: `EMAKI_HOME/embeddings|hypernetworks` and the A1111 install's folders).
    """
    ensure_allowed(params.prompt, params.negative_prompt)
    if params.hr_prompt or params.hr_negative_prompt:
        ensure_allowed(params.hr_prompt, params.hr_negative_prompt)
    sampler_name, schedule = parse_sampler_name(params.sampler_name, params.scheduler)
    sampler = get_sampler(sampler_name)
    policy = policy or DevicePolicy.choose()
    model = cache.get(resolve_model(params.model), params.vae, policy.dtype, HashCache(hash_cache_path()))
    factor = model.components.config.vae_scale_factor
    init = open_init_image(params.init_image) if params.init_image else None
    width, height = default_size(init, factor) if init is not None else (native_size(model),) * 2
    params = params.updated(
        seed=resolve_seed(params.seed),
        subseed=resolve_seed(params.subseed),
        width=params.width or width,
        height=params.height or height,
        sampler_name=sampler_name,
        scheduler=schedule,
    )
    assert params.width is not None and params.height is not None
    _prepare(model, policy)
    parts = model.components
    if params.width % factor or params.height % factor:
        raise ParamsError(f"size: {params.width}x{params.height} must be a multiple of {factor} for this model")
    latent_shape = (parts.config.latent_channels, params.height // factor, params.width // factor)
    prompt_text, networks = extract_networks(params.prompt)
    # networks (issue 6): embeddings by name in both prompts; hypernetworks by tag and setting
    embeddings = DEFAULT_EMBEDDINGS.scan(embeddings_dirs if embeddings_dirs is not None else embedding_folders(),
                                         expected_width=text_encoder_width(model))
    hyper_folders = hypernetworks_dirs if hypernetworks_dirs is not None else hypernetwork_folders()
    hypernetworks = hypernetworks_for(params, networks, hyper_folders)
    setting_hypernetwork = hypernetworks[-1][0] if params.hypernetwork else None
    encoder = PromptEncoder(parts.text_encoder, parts.tokenizer, clip_skip=params.clip_skip,
                            emphasis=params.emphasis, embeddings=embeddings.lookup(parts.tokenizer))
    schedule_steps = params.steps * 2 if sampler.second_order else params.steps
    denoise_model = DiscreteEpsDenoiser(_eps_model(model, policy), parts.alphas_cumprod, lcm=sampler.lcm)
    sigmas = sigmas_for(sampler, schedule, params.steps, denoise_model.model_sigmas)
    start_sigma, init_latent = sigmas[0], None
    if init is not None:
        start_sigma, sigmas = img2img_sigmas(sampler, sigmas, params.steps, params.denoising_strength)
        init_latent = encode_image(parts.vae, fit_image(init, params.width, params.height, params.resize_mode),
                                   policy.device)
    options = {k: v for k, v in (("eta", params.eta), ("s_noise", params.s_noise)) if v is not None}
    with torch.inference_mode():  # the same prompts for every batch: encode once
        conds = encode_prompts(encoder, [prompt_text] * params.batch_size, schedule_steps,
                               dialect=params.prompt_dialect)
        unconds = encode_negative_prompts(encoder, [params.negative_prompt] * params.batch_size,
                                          schedule_steps, dialect=params.prompt_dialect)
    infotext_extras = {
        "embeddings_hashes": ti_hashes([*conds[0].embeddings, *unconds[0].embeddings]),
        "hypernetwork": setting_hypernetwork,
        "eta": recorded_eta(sampler, params.eta),
    }
    hires = _HiresPass.plan(params, model, policy, sampler, schedule, denoise_model, encoder, prompt_text) \
        if params.enable_hr else None
    result = GenerationResult(params, model)
    folder = out_dir if out_dir is not None else dated_folder(outputs_dir())
    applied = apply_hypernetworks(parts.unet, hypernetworks)
    try:
        for batch_index in range(params.n_iter):
            seeds, subseeds = batch_seeds(params, batch_index)
            rng = image_rng(params, latent_shape, seeds, subseeds)
            start = None if init_latent is None else init_latent.expand(params.batch_size, -1, -1, -1)
            guided = CFGDenoiser(denoise_model, conds, unconds, params.cfg_scale)

            def on_step(info: StepInfo, batch_index: int = batch_index) -> None:
                if interrupt is not None and interrupt.is_set():
                    raise Interrupted("interrupted")
                if skip is not None and skip.is_set():
                    raise _Skipped
                if progress is not None:
                    progress(GenerationProgress(batch_index, params.n_iter, info.step + 1, info.total, info.x, model))

            try:
                latents = _sample(sampler, guided, rng, sigmas, start_sigma, start, on_step, options, policy)
                if hires is not None:
                    latents = hires.run(latents, seeds, subseeds, on_step, options)
            except _Skipped:
                assert skip is not None
                skip.clear()
                continue
            for i, image in enumerate(_decode(model, latents, policy)):
                text = infotext_for(params, model, seeds[i], subseeds[i], sampler_name, schedule,
                                    sampler.uses_ensd, params.prompt, **infotext_extras)
                path = save_png(image, text, folder, seeds[i]) if save else None
                result.images.append(GeneratedImage(image, seeds[i], text, path))
    finally:
        applied.remove()  # the next generation starts clean
    return result


def image_rng(params: GenerationParams, shape: tuple[int, ...], seeds: list[int], subseeds: list[int]) -> ImageRNG:
    return ImageRNG(shape, seeds, subseeds=subseeds, subseed_strength=params.subseed_strength,
                    seed_resize_from_h=params.seed_resize_from_h, seed_resize_from_w=params.seed_resize_from_w,
                    source=params.rng, eta_noise_seed_delta=params.eta_noise_seed_delta)


def _sample(sampler: Sampler, guided: CFGDenoiser, rng: ImageRNG, sigmas: torch.Tensor, start_sigma: torch.Tensor,
            start: torch.Tensor | None, on_step: Callable[[StepInfo], None], options: dict,
            policy: DevicePolicy) -> torch.Tensor:
    """One sampling pass: noise from `rng` at `start_sigma` (on top of `start` for img2img)."""
    x = sampler.initial_latent(rng.first().to(policy.device), start_sigma, init=start)
    noise_sampler = brownian_noise_sampler(x, sigmas, rng.seeds) if sampler.brownian_noise else rng.noise_sampler()
    with torch.inference_mode():
        return sampler(guided, x, sigmas.to(policy.device), noise_sampler=noise_sampler, callback=on_step, **options)


@dataclass
class _HiresPass:
    """The second pass of a hires-fix run, planned once per generation (`emaki.hires`)."""

    params: GenerationParams
    model: LoadedModel
    policy: DevicePolicy
    sampler: Sampler
    denoise_model: DiscreteEpsDenoiser
    conds: list
    unconds: list
    size: tuple[int, int]
    sigmas: torch.Tensor
    start_sigma: torch.Tensor

    @classmethod
    def plan(cls, params: GenerationParams, model: LoadedModel, policy: DevicePolicy, sampler: Sampler,
             schedule: str, denoise_model: DiscreteEpsDenoiser, encoder: PromptEncoder,
             prompt_text: str) -> _HiresPass:
        if params.init_image:
            raise ParamsError("enable_hr: the hires fix is a txt2img pass; it cannot be combined with init_image")
        check_upscaler(params.hr_upscaler)
        hr_sampler = get_sampler(parse_sampler_name(params.hr_sampler_name)[0]) if params.hr_sampler_name else sampler
        if hr_sampler.lcm != sampler.lcm:
            raise ParamsError("hr_sampler_name: LCM and other samplers cannot be mixed in one run")
        total, t_enc = hires_steps(params)
        full = sigmas_for(hr_sampler, schedule, total, denoise_model.model_sigmas)
        start_sigma, sigmas = img2img_sigmas(hr_sampler, full, total, params.denoising_strength, t_enc=t_enc)
        # The hires prompts default to the first pass's; their timelines follow the hires steps.
        steps = (params.hr_second_pass_steps or params.steps) * (2 if hr_sampler.second_order else 1)
        prompt = extract_networks(params.hr_prompt)[0] if params.hr_prompt else prompt_text
        with torch.inference_mode():
            conds = encode_prompts(encoder, [prompt] * params.batch_size, steps, dialect=params.prompt_dialect)
            unconds = encode_negative_prompts(encoder, [params.hr_negative_prompt or params.negative_prompt]
                                              * params.batch_size, steps, dialect=params.prompt_dialect)
        return cls(params, model, policy, hr_sampler, denoise_model, conds, unconds, target_size(params), sigmas,
                   start_sigma)

    def run(self, latents: torch.Tensor, seeds: list[int], subseeds: list[int],
            on_step: Callable[[StepInfo], None], options: dict) -> torch.Tensor:
        params, parts = self.params, self.model.components
        factor = parts.config.vae_scale_factor
        if self.params.hr_upscaler in LATENT_UPSCALERS:
            upscaled = upscale_latents(latents.float(), self.size, factor, params.hr_upscaler)
        else:
            images = upscale_images(_decode(self.model, latents, self.policy), self.size, params.hr_upscaler)
            upscaled = torch.cat([encode_image(parts.vae, image, self.policy.device) for image in images])
        # A1111 draws the second pass's noise from new generators with the same seeds.
        rng = image_rng(params, tuple(upscaled.shape[1:]), seeds, subseeds)
        guided = CFGDenoiser(self.denoise_model, self.conds, self.unconds, params.cfg_scale)
        return _sample(self.sampler, guided, rng, self.sigmas, self.start_sigma, upscaled, on_step, options,
                       self.policy)


class _Skipped(Exception):
    """Raised out of the sampler's step callback to drop the current batch."""


def batch_seeds(params: GenerationParams, batch_index: int) -> tuple[list[int], list[int]]:
    """A1111's per-image seeds: seed + image index, unless a variation seed is mixed in, in which
    case the seed stays and the variation seed counts up."""
    first = batch_index * params.batch_size
    variation = params.subseed_strength > 0
    seeds = [params.seed + (0 if variation else first + i) for i in range(params.batch_size)]
    subseeds = [params.subseed + first + i for i in range(params.batch_size)]
    return seeds, subseeds

def _eps_model(model: LoadedModel, policy: DevicePolicy) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    unet = model.components.unet

    def eps(x: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = x.to(unet.dtype)
        if policy.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return unet(x, t, encoder_hidden_states=context.to(unet.dtype)).sample.float()

    return eps
