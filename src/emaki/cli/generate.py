"""`emaki generate` and `emaki info`."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from emaki.cli import app, cli_workspace, use_compile_cache
from emaki.cli.inpaint import inpainting_overrides
from emaki.errors import EmakiError, ParamsError
from emaki.infotext import parse_infotext, read_infotext
from emaki.infotext_codec import decode_infotext
from emaki.params import GenerationParams, speed_preset_under
from emaki.workspace import Workspace

if TYPE_CHECKING:
    from emaki.engine import GenerationProgress

console = Console(emoji=False)
_SIZE = re.compile(r"^(\d+)[xX×](\d+)$")


def parse_size(text: str) -> tuple[int, int]:
    """`512x768` → (512, 768): width × height."""
    match = _SIZE.match(text.strip())
    if not match:
        raise ParamsError(f"--size: expected WIDTHxHEIGHT like 512x768, got {text!r}")
    return int(match.group(1)), int(match.group(2))


def params_from_image(path: Path, workspace: Workspace | None = None) -> GenerationParams:
    """The params a PNG records; with a workspace, the styles of its styles files found in the
    prompts are taken back out into `styles` (as A1111 reads an infotext)."""
    from emaki.prompts.styles import read_styles, styles_files  # emaki.prompts pulls in torch

    text = read_infotext(path)
    if not text:
        raise EmakiError(f"{path}: the image holds no generation parameters")
    styles = list(read_styles(styles_files(workspace)).values()) if workspace is not None else []
    return decode_infotext(text, styles)


def _models_named_by_the_image(params: GenerationParams, image: Path, workspace: Workspace, model_from_image: bool,
                               vae_from_image: bool) -> GenerationParams:
    """A PNG is someone else's text: the model and VAE it names are looked up by name in the
    workspace only — never opened as a path, never fetched from a hub — unless --model/--vae say."""
    from emaki.engine.inventory import VAE_SUFFIXES
    from emaki.models.resolve import find_model_by_name
    from emaki.networks import walk_files

    if model_from_image and params.model:
        found = find_model_by_name(params.model, workspace)
        if found is None:
            raise ParamsError(f"{image}: names the model {params.model!r}, which is not in the workspace's model "
                              "folders; pass --model to choose one")
        params = params.updated(model=found)
    if vae_from_image and params.vae:
        name = params.vae
        vaes = [p for p in walk_files(workspace.folders("vaes"), VAE_SUFFIXES) if name in (p.name, p.stem)]
        if Path(name).name != name or not vaes:
            raise ParamsError(f"{image}: names the VAE {name!r}, which is not in the workspace's VAE folders; "
                              "pass --vae to choose one")
        params = params.updated(vae=str(vaes[0]))
    return params


# How `emaki generate`'s options become params fields; `emaki grid` takes the same options.
OPTION_FIELDS = {
    "prompt": "prompt", "negative": "negative_prompt", "style": "styles", "model": "model", "vae": "vae",
    "sampler": "sampler_name", "scheduler": "scheduler", "steps": "steps", "cfg": "cfg_scale", "seed": "seed",
    "ngms": "s_min_uncond", "ngms_all_steps": "s_min_uncond_all", "cache_interval": "cache_interval",
    "gate_step": "gate_step", "token_merging": "token_merging_ratio", "batch_size": "batch_size", "batch_count": "n_iter", "clip_skip": "clip_skip",
    "ensd": "eta_noise_seed_delta", "rng": "rng", "prompt_dialect": "prompt_dialect", "tiling": "tiling",
    "restore_faces": "restore_faces",
    "hypernetwork": "hypernetwork", "hypernetwork_strength": "hypernetwork_strength", "init_image": "init_image",
    "denoise": "denoising_strength", "resize_mode": "resize_mode", "hires": "enable_hr", "hr_scale": "hr_scale",
    "hr_upscaler": "hr_upscaler", "hr_steps": "hr_second_pass_steps", "hr_sampler": "hr_sampler_name",
    "hr_token_merging": "token_merging_ratio_hr",
}
INPAINTING_OPTIONS = ("mask", "mask_blur", "fill", "area", "padding", "invert", "noise_multiplier", "mask_weight")
# Options that are not params fields: read by the commands, or by the engine's surroundings.
OTHER_OPTIONS = ("size", "speed", "from_image", "out", "precision", "threads", "vae_tiling", "compile", "embeddings_dir",
                 "a1111", "hypernetworks_dir")


def params_from_options(given: Mapping[str, Any], workspace: Workspace) -> GenerationParams:
    """The params `emaki generate`'s options (by parameter name, as click parsed them) ask for:
    over the `--from` image's, and `--speed`'s preset under the options given."""
    from_image = Path(given["from_image"]) if given.get("from_image") else None
    base = params_from_image(from_image, workspace) if from_image is not None else GenerationParams()
    fields = {field: given.get(option) for option, field in OPTION_FIELDS.items()}
    fields["styles"] = list(fields["styles"] or ()) or None  # click gives () when --style is not given
    if fields["sampler_name"] and fields["scheduler"] is None:
        fields["scheduler"] = "Automatic"  # a sampler named alone takes its own schedule
    if fields["init_image"] is not None:
        fields["init_image"] = str(fields["init_image"])
    fields |= inpainting_overrides(**{name: given.get(name) for name in INPAINTING_OPTIONS})
    if given.get("size") is not None:
        fields["width"], fields["height"] = parse_size(given["size"])
    if from_image is None and given.get("prompt") is None:
        raise ParamsError("prompt: give a prompt, or --from IMAGE to regenerate one")
    params = base.updated(**{k: v for k, v in fields.items() if v is not None})
    # The preset over the image's values, the options given over the preset.
    return params.updated(**speed_preset_under(given.get("speed"), params.steps, fields))


@app.command("generate")
def generate_command(
    ctx: typer.Context,
    prompt: Annotated[str | None, typer.Argument(help="The prompt (A1111 syntax).")] = None,
    negative: Annotated[str | None, typer.Option("--negative", "-n", help="Negative prompt.")] = None,
    style: Annotated[list[str] | None, typer.Option("--style", help="A style (`emaki styles list`) applied to the prompts; repeatable, applied in order.")] = None,
    model: Annotated[str | None, typer.Option(help="Checkpoint file, diffusers folder or hub id (default: the bundled demo model).")] = None,
    vae: Annotated[str | None, typer.Option(help="A separate VAE file.")] = None,
    sampler: Annotated[str | None, typer.Option(help='Sampler by its A1111 name, e.g. "Euler a", "DPM++ 2M Karras".')] = None,
    scheduler: Annotated[str | None, typer.Option(help="Schedule type (Automatic, Karras, ...).")] = None,
    steps: Annotated[int | None, typer.Option(help="Sampling steps.")] = None,
    cfg: Annotated[float | None, typer.Option(help="CFG scale.")] = None,
    speed: Annotated[str | None, typer.Option("--speed", help="exact (default) or fast: the approximations that keep quality (docs/performance.md); the options below override it.")] = None,
    ngms: Annotated[float | None, typer.Option("--ngms", help="Negative Guidance minimum sigma (A1111): below it, skip the negative prompt every other step (0: off).")] = None,
    ngms_all_steps: Annotated[bool | None, typer.Option("--ngms-all-steps", help="--ngms skips the negative prompt on every step, not every other.")] = None,
    cache_interval: Annotated[int | None, typer.Option("--cache-interval", help="DeepCache: the whole UNet every N steps, its deep features reused in between (0: off).")] = None,
    gate_step: Annotated[int | None, typer.Option("--gate-step", help="T-GATE: from this step on, reuse cross-attention and drop the negative prompt (0: off).")] = None,
    token_merging: Annotated[float | None, typer.Option("--token-merging", help="ToMe (A1111's token merging ratio, 0-0.9): merge this share of tokens before self-attention at full resolution (0: off).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed; -1 for a random one.")] = None,
    size: Annotated[str | None, typer.Option(help="WIDTHxHEIGHT, multiples of 8 (default: the model's native size).")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="Images per batch.")] = None,
    batch_count: Annotated[int | None, typer.Option("--batch-count", help="Number of batches.")] = None,
    clip_skip: Annotated[int | None, typer.Option("--clip-skip", help="CLIP skip, A1111 numbering (2 = penultimate layer).")] = None,
    ensd: Annotated[int | None, typer.Option("--ensd", help="Eta noise seed delta (NovelAI: 31337).")] = None,
    rng: Annotated[str | None, typer.Option(help="Noise source: CPU, GPU or NV.")] = None,
    prompt_dialect: Annotated[str | None, typer.Option("--prompt-dialect", help="a1111 or novelai.")] = None,
    tiling: Annotated[bool | None, typer.Option("--tiling", help="Seamless tiling: a picture whose opposite edges continue into each other (A1111's Tiling).")] = None,
    restore_faces: Annotated[bool | None, typer.Option("--restore-faces", help="Restore every face with GFPGAN after decoding (A1111's Restore faces; needs GFPGANv1.4.pth and detection_Resnet50_Final.pth in EMAKI_HOME/face-restorers or A1111's models/GFPGAN).")] = None,
    from_image: Annotated[Path | None, typer.Option("--from", help="Regenerate from a PNG's parameters (other options override).")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Folder for the images (default: EMAKI_HOME/outputs/<date>).")] = None,
    precision: Annotated[str | None, typer.Option(help="auto (default: bf16 on a CPU with AVX-512 BF16 or AMX, fp16 on a GPU, else fp32), fp32, bf16, fp16.", envvar="EMAKI_PRECISION")] = None,
    threads: Annotated[int | None, typer.Option("--threads", help="CPU threads (default: the idle cores; 1 on a busy 2-core machine).")] = None,
    compile: Annotated[bool, typer.Option("--compile", help="torch.compile the UNet: the same image, faster steps after a first one that compiles (minutes on a small CPU; cached in EMAKI_HOME/cache/compile).")] = False,
    vae_tiling: Annotated[str | None, typer.Option("--vae-tiling", help="auto (default: only when a whole VAE pass would need over half the free memory), on or off: decode and encode large pictures in overlapping tiles, to save memory (a tiled picture differs slightly; docs/performance.md).")] = None,
    hypernetwork: Annotated[str | None, typer.Option("--hypernetwork", help="Hypernetwork (file stem) applied to every prompt; or use <hypernet:NAME:STRENGTH> in the prompt.")] = None,
    hypernetwork_strength: Annotated[float | None, typer.Option("--hypernetwork-strength", help="Strength of --hypernetwork (default 1).")] = None,
    embeddings_dir: Annotated[list[Path] | None, typer.Option("--embeddings-dir", help="Folder of embeddings (repeatable; default: EMAKI_HOME/embeddings and EMAKI_A1111/embeddings).")] = None,
    a1111: Annotated[Path | None, typer.Option("--a1111", help="An A1111 install whose models, embeddings and hypernetworks are used too (read-only; same as EMAKI_A1111).")] = None,
    hypernetworks_dir: Annotated[list[Path] | None, typer.Option("--hypernetworks-dir", help="Folder of hypernetworks (repeatable; default: EMAKI_HOME/hypernetworks and EMAKI_A1111/models/hypernetworks).")] = None,
    init_image: Annotated[Path | None, typer.Option("--init-image", help="img2img: start from this image (see `emaki img2img`).")] = None,
    denoise: Annotated[float | None, typer.Option("--denoise", help="img2img: denoising strength, 0 keeps the image, 1 redraws it (default 0.75).")] = None,
    resize_mode: Annotated[str | None, typer.Option("--resize-mode", help='img2img: "just resize" (default), "crop and resize" or "resize and fill".')] = None,
    noise_multiplier: Annotated[float | None, typer.Option("--noise-multiplier", help="img2img: scale the initial noise (default 1).")] = None,
    mask: Annotated[Path | None, typer.Option("--mask", help="Inpainting: repaint where this mask is white (see `emaki inpaint`); an --init-image with transparency is repainted where transparent.")] = None,
    mask_blur: Annotated[int | None, typer.Option("--mask-blur", help="Inpainting: blur the mask's edge by this many pixels (default 4).")] = None,
    fill: Annotated[str | None, typer.Option("--fill", help='Inpainting: "fill", "original" (default), "latent noise" or "latent nothing".')] = None,
    area: Annotated[str | None, typer.Option("--area", help='Inpainting: "whole" (default) or "only-masked" (cropped with --padding, redrawn at --size, pasted back).')] = None,
    padding: Annotated[int | None, typer.Option("--padding", help="Inpainting, only-masked: pixels kept around the mask (default 32).")] = None,
    invert: Annotated[bool | None, typer.Option("--invert", help="Inpainting: repaint what the mask leaves out.")] = None,
    mask_weight: Annotated[float | None, typer.Option("--mask-weight", help="9-channel inpainting models: conditioning mask strength, 0-1 (default 1).")] = None,
    hires: Annotated[bool | None, typer.Option("--hires", help="Hires fix: redraw at a larger size in a second pass (strength: --denoise, default 0.75).")] = None,
    hr_scale: Annotated[float | None, typer.Option("--hr-scale", help="Hires fix: upscale factor (default 2).")] = None,
    hr_upscaler: Annotated[str | None, typer.Option("--hr-upscaler", help='Hires fix: "Latent" (default), "Latent (nearest-exact)", ..., "Lanczos", "Nearest", or an upscaler model by name ("R-ESRGAN 4x+", a file stem in the upscalers folder).')] = None,
    hr_steps: Annotated[int | None, typer.Option("--hr-steps", help="Hires fix: steps of the second pass (default: --steps).")] = None,
    hr_sampler: Annotated[str | None, typer.Option("--hr-sampler", help="Hires fix: sampler of the second pass (default: --sampler).")] = None,
    hr_token_merging: Annotated[float | None, typer.Option("--hr-token-merging", help="Hires fix: token merging ratio of the second pass (A1111's token_merging_ratio_hr; default: --token-merging's).")] = None,
) -> None:
    """Generate images from a prompt (txt2img; img2img with --init-image)."""
    # torch, diffusers and transformers take seconds to import: only the commands that run a
    # model import them, so `emaki --help` and the light commands start at once.
    from emaki.devices import DevicePolicy
    from emaki.engine.policy import ensure_params_allowed

    workspace = cli_workspace(a1111, embeddings=embeddings_dir, hypernetworks=hypernetworks_dir)
    params = params_from_options(ctx.params, workspace)  # every option of the command, by name
    ensure_params_allowed(params)  # before anything loads or prints
    if from_image is not None:
        params = _models_named_by_the_image(params, from_image, workspace, model is None, vae is None)
    policy = DevicePolicy.choose(precision, threads=threads, vae_tiling=vae_tiling, compile=compile)
    if compile:
        use_compile_cache(workspace)
    # The engine pulls in diffusers (seconds, ~200 MB): only the commands that run it import it.
    from emaki.engine import Engine

    engine = Engine(workspace, policy)
    with Progress(TextColumn("[progress.description]{task.description}"), BarColumn(),
                  MofNCompleteColumn(), TimeRemainingColumn(), console=console, transient=True) as bar:
        task = bar.add_task("loading model", total=None)

        def on_progress(event: GenerationProgress) -> None:
            bar.update(task, description=f"batch {event.batch + 1}/{event.batches}",
                       total=event.steps, completed=event.step)

        result = engine.generate(params, out_dir=out, progress=on_progress)
    for image in result.images:
        print(image.path)


@app.command("img2img", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def img2img_command(
    ctx: typer.Context,
    image: Annotated[Path, typer.Argument(help="The image to start from (PNG, JPEG, WebP).")],
    prompt: Annotated[str, typer.Argument(help="The prompt (A1111 syntax).")],
    denoise: Annotated[float, typer.Option("--denoise", help="Denoising strength: 0 keeps the image, 1 redraws it all.")] = 0.75,
    resize_mode: Annotated[str, typer.Option("--resize-mode", help='"just resize", "crop and resize" or "resize and fill".')] = "just resize",
) -> None:
    """Redraw an image from a prompt (img2img). Every `emaki generate` option applies too
    (--negative, --model, --sampler, --steps, --seed, --size, ...); the size defaults to the image's."""
    group = typer.main.get_command(app)
    group.main(args=["generate", prompt, "--init-image", str(image), "--denoise", str(denoise),
                     "--resize-mode", resize_mode, *ctx.args], standalone_mode=False)


@app.command("info")
def info_command(
    image: Annotated[Path, typer.Argument(help="A PNG/JPEG/WebP made by emaki, A1111 or NovelAI.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the parsed fields as JSON.")] = False,
) -> None:
    """Print the generation parameters stored in an image."""
    text = read_infotext(image)
    if not text:
        raise EmakiError(f"{image}: the image holds no generation parameters")
    if as_json:
        console.print_json(json.dumps(parse_infotext(text), ensure_ascii=False))
    else:
        print(text)
