"""One generation, in stages that read top to bottom like the diffusers pipeline:

    plan → conditioning → (per batch) initial latents → denoise → decode → write

`plan` is here; the other stages are in `emaki.engine.stages`. Features that change a run (img2img, hires fix, networks) are `Extension`s hooked into these
stages (`emaki.engine.run.Extension`); the stages themselves know none of them.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from emaki.devices import DevicePolicy
from emaki.engine.faces import FaceRestoration, face_extensions
from emaki.engine.hires import HiresFix
from emaki.engine.image_prompts import RunPrompts, network_tags
from emaki.engine.img2img import default_size, open_init_image
from emaki.engine.inpaint import image_extensions
from emaki.engine.networks import NetworkLibraries, NetworksExtension
from emaki.engine.patching import ModelHandle
from emaki.engine.run import (
    Batch,
    Cancel,
    Extension,
    GeneratedImage,
    GenerationProgress,
    GenerationResult,
    ProgressCallback,
    Run,
    StepCallback,
)
from emaki.engine.speed import speed_extensions
from emaki.engine.speed.compile import set_compiled
from emaki.engine.stages import (
    batch_seeds,
    condition,
    condition_batch,
    decode,
    denoise,
    initial_latents,
    write,
)
from emaki.engine.tiling import tiling_extensions
from emaki.engine.unfinished import InterruptCheck, LatestLatents, unfinished_images
from emaki.errors import EmakiError, Interrupted, ParamsError
from emaki.models.components import SDComponents
from emaki.models.loader import LoadedModel
from emaki.networks import EmbeddingScan
from emaki.params import MAX_SEED, GenerationParams
from emaki.sampling import get_sampler, parse_sampler_name, sigmas_for
from emaki.sampling.denoiser import DiscreteEpsDenoiser
from emaki.sampling.progress import StepInfo


def resolve_seed(seed: int) -> int:
    return secrets.randbelow(MAX_SEED + 1) if seed == -1 else seed


def resolve_seeds(params: GenerationParams) -> GenerationParams:
    """`params` with a random seed (-1) drawn, and a random variation seed: what the images'
    seeds (and wildcard choices) are made from."""
    if params.seed != -1 and params.subseed != -1:
        return params
    return params.updated(seed=resolve_seed(params.seed), subseed=resolve_seed(params.subseed))


def image_seeds(params: GenerationParams) -> list[int]:
    """The seed of every image of a run, batch after batch (`stages.batch_seeds`)."""
    return [seed for index in range(params.n_iter) for seed in batch_seeds(params, index)[0]]


def native_size(model: LoadedModel) -> int:
    config = model.components.config
    return int(config.unet.get("sample_size") or 64) * config.vae_scale_factor


def text_encoder_width(model: LoadedModel) -> int:
    return int(model.components.text_encoder.config.hidden_size)  # the token embeddings' width


# --- plan ---

def plan(params: GenerationParams, handle: ModelHandle, policy: DevicePolicy, networks: NetworkLibraries,
         prompts: RunPrompts | None = None, faces: FaceRestoration | None = None) -> Run:
    """Resolve what the params leave open (seeds, size, sampler and schedule names), choose the
    extensions, and set up the denoiser and the sigmas. `prompts` are each image's prompts
    (styles applied, wildcards expanded: `image_prompts`); without them every image has the
    params' own. `faces`: the engine's loaded face models, for `restore_faces`."""
    model = handle.model
    sampler_name, schedule = parse_sampler_name(params.sampler_name, params.scheduler)
    sampler = get_sampler(sampler_name)
    factor = model.components.config.vae_scale_factor
    init = open_init_image(params.init_image) if params.init_image else None
    width, height = default_size(init, factor) if init is not None else (native_size(model),) * 2
    params = params.updated(seed=resolve_seed(params.seed), subseed=resolve_seed(params.subseed),
                            width=params.width or width, height=params.height or height,
                            sampler_name=sampler_name, scheduler=schedule)
    assert params.width is not None and params.height is not None
    if params.width % factor or params.height % factor:
        raise ParamsError(f"size: {params.width}x{params.height} must be a multiple of {factor} for this model")
    _place(model, policy)
    parts = model.components
    if prompts is None:
        prompts = RunPrompts.same(params, params.batch_size * params.n_iter)
    prompt_text, tags = network_tags(prompts.images)
    denoiser = DiscreteEpsDenoiser(_eps_model(model, policy), parts.alphas_cumprod, lcm=sampler.lcm)
    sigmas = sigmas_for(sampler, schedule, params.steps, denoiser.model_sigmas)
    # img2img, inpainting (a mask, or the init image's transparency), a 9-channel model's conditioning
    # faces are restored before inpainting's composite puts the untouched pixels back, as in A1111
    extensions: list[Extension] = [NetworksExtension(networks, tags), *speed_extensions(params),
                                   *face_extensions(params, faces, networks.workspace, policy.device),
                                   *image_extensions(params, init, model), *tiling_extensions(params)]
    if params.enable_hr:
        extensions.append(HiresFix(networks.workspace))
    options = {k: v for k, v in (("eta", params.eta), ("s_noise", params.s_noise)) if v is not None}
    run = Run(params, handle, policy, sampler, schedule, prompt_text, tags, denoiser, sigmas, sigmas[0],
              (parts.config.latent_channels, params.height // factor, params.width // factor), options, extensions)
    run.readings = networks.readings
    run.prompts = prompts.images
    run.infotext_networks |= prompts.fields
    for extension in extensions:
        extension.plan(run)
    return run


def _place(model: LoadedModel, policy: DevicePolicy) -> None:
    parts = model.components
    modules: tuple[torch.nn.Module, ...] = (parts.unet, parts.vae, parts.text_encoder)
    for module in modules:
        module.to(policy.device)
    if policy.channels_last:
        # torch's stubs omit `memory_format` from Module.to (it is a documented keyword).
        parts.unet.to(memory_format=torch.channels_last)  # type: ignore[call-arg]
        parts.vae.to(memory_format=torch.channels_last)  # type: ignore[call-arg]
    set_compiled(parts.unet, policy.compile)  # --compile: same math, recorded nowhere


def _eps_model(model: LoadedModel, policy: DevicePolicy) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    unet = model.components.unet

    def eps(x: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = x.to(unet.dtype)
        if policy.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return unet(x, t, encoder_hidden_states=context.to(unet.dtype)).sample.float()

    return eps


# --- the whole run ---

class _Skipped(Exception):
    """Raised out of the sampler's step callback to drop the current batch."""


def run_generation(run: Run, embeddings: EmbeddingScan, *, folder: Path | None, cancel: Cancel | None,
                   progress: ProgressCallback | None, preview_map: np.ndarray | None) -> GenerationResult:
    """Conditioning, then every batch through the stages; `run.handle` is patched by the
    extensions and restored by the caller's `with`. An interrupt (or any `EmakiError`) carries
    the images made so far as its `result`: they are already written; interrupted while
    sampling, the batch as far as it got too (`result.unfinished`, not written)."""
    check = InterruptCheck(cancel.interrupt) if cancel is not None else None
    if check is not None:
        interrupt_inside_models(run.handle, check)
    for extension in run.extensions:
        extension.patch_model(run, run.handle)
    condition(run, embeddings)
    for extension in run.extensions:
        extension.prepare(run)
    result = GenerationResult(run.params, run.model)
    for index in range(run.params.n_iter):
        batch = Batch(index, *batch_seeds(run.params, index))
        latest = LatestLatents()
        on_step = latest.recording(step_callback(run, batch, cancel, progress, preview_map))
        try:
            result.images += make_batch(run, batch, folder, on_step)
        except _Skipped:
            assert cancel is not None
            cancel.skip.clear()
        except EmakiError as error:  # an interrupt, or a later batch failing: the images made are kept
            partial = latest.unfinished
            if isinstance(error, Interrupted) and check is not None and partial is not None:
                result.unfinished = unfinished_images(run, batch, partial, check)
            error.result = result  # type: ignore[attr-defined]
            raise
    return result


def make_batch(run: Run, batch: Batch, folder: Path | None, on_step: StepCallback) -> list[GeneratedImage]:
    """(its own prompts' conditioning) → initial latents → denoise (and the extensions'
    passes) → decode → write."""
    condition_batch(run, batch.index)
    latents = denoise(run, batch, initial_latents(run, batch), on_step)
    for extension in run.extensions:
        latents = extension.after_denoise(run, batch, latents, on_step)
    images = decode(run, latents)
    for extension in run.extensions:
        images = extension.after_decode(run, batch, images)
    return write(run, batch, images, folder)


def interrupt_inside_models(handle: ModelHandle, interrupt: threading.Event | InterruptCheck) -> None:
    """Check `interrupt` before each block of the UNet and of the VAE's encoder and decoder, and
    each resnet, attention and resampler inside them, for the run (`handle` removes the hooks): a
    step at 2048² takes minutes on a CPU, so between steps (`step_callback`) is not soon enough.
    Skip is still taken between steps only: it ends the batch being sampled, as before."""

    def check(module: torch.nn.Module, args: object) -> None:
        if interrupt.is_set():
            raise Interrupted("interrupted")

    for module in _model_blocks(handle.components):
        handle.add_forward_pre_hook(module, check)


def _model_blocks(parts: SDComponents) -> Iterator[torch.nn.Module]:
    unet, vae = parts.unet, parts.vae
    blocks = [*unet.down_blocks, unet.mid_block, *unet.up_blocks, *vae.encoder.down_blocks, vae.encoder.mid_block,
              vae.decoder.mid_block, *vae.decoder.up_blocks]
    for block in blocks:
        if block is None:  # a UNet without a middle block
            continue
        yield block
        for child in block.children():  # resnets, attentions, upsamplers: lists of modules
            yield from child if isinstance(child, torch.nn.ModuleList) else (child,)


def step_callback(run: Run, batch: Batch, cancel: Cancel | None, progress: ProgressCallback | None,
                  preview_map: np.ndarray | None) -> StepCallback:
    """What runs after every sampler step: extensions, then interrupt/skip, then progress."""

    def on_step(info: StepInfo) -> None:
        for extension in run.extensions:
            extension.after_step(run, batch, info)
        if cancel is not None and cancel.interrupt.is_set():
            raise Interrupted("interrupted")
        if cancel is not None and cancel.skip.is_set():
            raise _Skipped
        if progress is not None:
            progress(GenerationProgress(batch.index, run.params.n_iter, info.step + 1, info.total, info.x,
                                        preview_map))

    return on_step
