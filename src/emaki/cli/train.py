"""`emaki train embedding|hypernetwork|lora NAME --data DIR --steps N`: A1111's training (and
kohya's LoRA options), on the CLI."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from emaki.cli import app, cli_workspace
from emaki.cli.generate import parse_size
from emaki.errors import Interrupted, ParamsError

if TYPE_CHECKING:
    from emaki.training.report import TrainingOutcome, TrainingUpdate

console = Console(stderr=True, emoji=False)

# Options that only one kind has: (kind, field) — given for the other kind they are an error.
ONLY = {"init_text": "embedding", "num_vectors_per_token": "embedding", "save_format": "embedding",
        "sizes": "hypernetwork", "layer_structure": "hypernetwork", "activation_func": "hypernetwork",
        "weight_initialization": "hypernetwork", "add_layer_norm": "hypernetwork",
        "dropout_structure": "hypernetwork", "network_dim": "lora", "network_alpha": "lora", "conv_dim": "lora",
        "conv_alpha": "lora", "unet_lr": "lora", "text_encoder_lr": "lora", "optimizer": "lora",
        "lr_scheduler": "lora", "lr_warmup_steps": "lora", "min_snr_gamma": "lora", "noise_offset": "lora",
        "caption_dropout_rate": "lora", "keep_tokens": "lora"}


@contextmanager
def first_ctrl_c_cancels(cancel: threading.Event) -> Iterator[None]:
    """The first Ctrl-C sets `cancel` (the run saves and stops after its step); a second one
    interrupts at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        cancel.set()
        signal.signal(signal.SIGINT, previous)
        console.print("stopping after this step and saving (Ctrl-C again to abort at once)")

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def training_fields(kind: str, given: dict[str, Any]) -> dict[str, Any]:
    """The `TrainingParams` fields of the flags a user gave (None = not given)."""
    fields = {k: v for k, v in given.items() if v is not None}
    wrong = [k for k in fields if ONLY.get(k, kind) != kind]
    if wrong:
        flags = ", ".join(FLAG_NAMES.get(k, k) for k in wrong)
        article = "an" if ONLY[wrong[0]] == "embedding" else "a"
        raise ParamsError(f"{flags}: only for training {article} {ONLY[wrong[0]]}")
    return fields


FLAG_NAMES = {"init_text": "--init-text", "num_vectors_per_token": "--vectors", "save_format": "--format",
              "sizes": "--sizes", "layer_structure": "--layers", "activation_func": "--activation",
              "weight_initialization": "--init", "add_layer_norm": "--layer-norm", "dropout_structure": "--dropout",
              "network_dim": "--rank", "network_alpha": "--alpha", "conv_dim": "--conv-rank", "conv_alpha": "--conv-alpha",
              "unet_lr": "--unet-lr", "text_encoder_lr": "--te-lr", "optimizer": "--optimizer",
              "lr_scheduler": "--scheduler", "lr_warmup_steps": "--warmup", "min_snr_gamma": "--min-snr-gamma",
              "noise_offset": "--noise-offset", "caption_dropout_rate": "--caption-dropout", "keep_tokens": "--keep-tokens"}


def _report(outcome: TrainingOutcome) -> None:
    for message in outcome.messages:
        console.print(escape(message), highlight=False)
    loss = f", last loss {outcome.final_loss:.4f}" if outcome.final_loss is not None else ""
    console.print(escape(f"{outcome.kind} {outcome.name}: step {outcome.step}{loss}; loss log "
                         f"{outcome.loss_csv}, previews and saves in {outcome.log_directory}"), highlight=False)
    print(outcome.path)


@app.command("train")
def train_command(
    kind: Annotated[Literal["embedding", "hypernetwork", "lora"], typer.Argument(help="embedding, hypernetwork or lora.")],
    name: Annotated[str, typer.Argument(help="Its name: an embedding's prompt word, <hypernet:NAME>, <lora:NAME>.")],
    data: Annotated[Path, typer.Option("--data", help="Folder of training images (PNG/JPEG/WebP), captions in <image>.txt or the file name.")],
    steps: Annotated[int, typer.Option("--steps", help="Train up to this step (A1111's max steps).")],
    model: Annotated[str | None, typer.Option(help="Checkpoint to train on (default: the bundled demo model).")] = None,
    learn_rate: Annotated[str | None, typer.Option("--learn-rate", help='Rate or A1111 schedule "0.005:100, 1e-3:1000, 1e-5" (default 0.005 embedding, 0.00001 hypernetwork).')] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="Images per step (default 1).")] = None,
    grad_accum: Annotated[int | None, typer.Option("--grad-accum", help="Batches per optimizer step (default 1).")] = None,
    clip_grad: Annotated[str | None, typer.Option("--clip-grad", help="Gradient clipping: value or norm (default: off).")] = None,
    clip_value: Annotated[str | None, typer.Option("--clip-value", help="The clip value, a number or a schedule like the learn rate (default 0.1).")] = None,
    template: Annotated[str | None, typer.Option("--template", help="Prompt template: none, style, style_filewords, subject, subject_filewords, hypernetwork, tags, tags_filewords, filewords, or a file.")] = None,
    size: Annotated[str | None, typer.Option("--size", help="Resize images to WIDTHxHEIGHT (default: the model's native size).")] = None,
    keep_size: Annotated[bool | None, typer.Option("--keep-size", help="Keep each image's size; batches hold images of one size.")] = None,
    buckets: Annotated[str | None, typer.Option("--buckets", help="Aspect-ratio buckets MIN,MAX,STEP in pixels (kohya's: 256,1024,64): each image fitted to the bucket nearest its aspect ratio, area up to --size; batches hold one bucket.")] = None,
    repeats: Annotated[int | None, typer.Option("--repeats", help="Use each image in --data this many times per epoch (images in kohya-style N_name subfolders: N times; default 1).")] = None,
    alpha_weight: Annotated[bool | None, typer.Option("--alpha-weight", help="Use the images' alpha channel as the loss weight.")] = None,
    filename_regex: Annotated[str | None, typer.Option("--filename-regex", help="Keep what this regex finds in a file-name caption.")] = None,
    join: Annotated[str | None, typer.Option("--join", help="What joins the regex's finds (default: a space).")] = None,
    shuffle_tags: Annotated[bool | None, typer.Option("--shuffle-tags", help="Shuffle the caption's comma-separated tags each step.")] = None,
    tag_dropout: Annotated[float | None, typer.Option("--tag-dropout", help="Drop each tag with this probability each step.")] = None,
    latent_sampling: Annotated[str | None, typer.Option("--latent-sampling", help="once (default), deterministic or random.")] = None,
    save_every: Annotated[int | None, typer.Option("--save-every", help="Write <name>-<step> every N steps (default 500; 0: never).")] = None,
    preview_every: Annotated[int | None, typer.Option("--preview-every", help="Draw a preview every N steps (default 500; 0: never).")] = None,
    preview_prompt: Annotated[str | None, typer.Option("--preview-prompt", help="Prompt of the previews (default: the first caption).")] = None,
    preview_seed: Annotated[int | None, typer.Option("--preview-seed", help="Seed of the previews (default 1).")] = None,
    clip_skip: Annotated[int | None, typer.Option("--clip-skip", help="CLIP skip, as in generation.")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Seeds noise, timesteps and data order (default 0).")] = None,
    resume: Annotated[bool | None, typer.Option("--resume", help="Go on from the existing file (and its .optim) up to --steps.")] = None,
    overwrite: Annotated[bool | None, typer.Option("--overwrite", help="Replace an existing file of this name.")] = None,
    log_dir: Annotated[Path | None, typer.Option("--log-dir", help="Where saves, previews and the loss log go (default: EMAKI_HOME/training/<kind>s/<name>).")] = None,
    init_text: Annotated[str | None, typer.Option("--init-text", help="Embedding: the words its vectors start from (default *; empty: zeros).")] = None,
    vectors: Annotated[int | None, typer.Option("--vectors", help="Embedding: vectors per token, 1-75 (default 1).")] = None,
    save_format: Annotated[str | None, typer.Option("--format", help="Embedding: pt (default) or safetensors.")] = None,
    sizes: Annotated[str | None, typer.Option("--sizes", help="Hypernetwork: context widths (default: the model's, 768,320,640,1280 on SD 1.x).")] = None,
    layers: Annotated[str | None, typer.Option("--layers", help="Hypernetwork: layer structure, first and last 1 (default 1,2,1).")] = None,
    activation: Annotated[str | None, typer.Option("--activation", help="Hypernetwork: linear (default), relu, leakyrelu, elu, swish, tanh, sigmoid, ...")] = None,
    init: Annotated[str | None, typer.Option("--init", help="Hypernetwork: Normal (default), KaimingUniform, KaimingNormal, XavierUniform, XavierNormal.")] = None,
    layer_norm: Annotated[bool | None, typer.Option("--layer-norm", help="Hypernetwork: LayerNorm after each layer.")] = None,
    dropout: Annotated[str | None, typer.Option("--dropout", help="Hypernetwork: dropout structure, one number per layer, e.g. 0,0.3,0.")] = None,
    rank: Annotated[int | None, typer.Option("--rank", help="LoRA: rank of linear layers (default 8).")] = None,
    alpha: Annotated[float | None, typer.Option("--alpha", help="LoRA: alpha; scale = alpha/rank (default: the rank).")] = None,
    conv_rank: Annotated[int | None, typer.Option("--conv-rank", help="LoRA: rank of 3x3 convolutions, LoCon (0: none; default none, 4 on the demo model).")] = None,
    conv_alpha: Annotated[float | None, typer.Option("--conv-alpha", help="LoRA: alpha of the convolutions (default: the conv rank).")] = None,
    unet_lr: Annotated[float | None, typer.Option("--unet-lr", help="LoRA: UNet learning rate (default: --learn-rate).")] = None,
    te_lr: Annotated[float | None, typer.Option("--te-lr", help="LoRA: text-encoder learning rate, 0 = UNet only (default: --learn-rate; 0 on the demo model).")] = None,
    optimizer: Annotated[str | None, typer.Option("--optimizer", help="LoRA: a torch.optim class (AdamW, Adam, SGD, Adafactor, ...).")] = None,
    scheduler: Annotated[str | None, typer.Option("--scheduler", help="LoRA: constant, constant_with_warmup, cosine, cosine_with_restarts, linear (default: constant; on the demo model cosine).")] = None,
    warmup: Annotated[int | None, typer.Option("--warmup", help="LoRA: warm-up steps.")] = None,
    min_snr_gamma: Annotated[float | None, typer.Option("--min-snr-gamma", help="LoRA: min-SNR loss weighting gamma (e.g. 5).")] = None,
    noise_offset: Annotated[float | None, typer.Option("--noise-offset", help="LoRA: noise offset (e.g. 0.05).")] = None,
    caption_dropout: Annotated[float | None, typer.Option("--caption-dropout", help="LoRA: drop the whole caption with this probability.")] = None,
    keep_tokens: Annotated[int | None, typer.Option("--keep-tokens", help="LoRA: the first N tags stay first and are never dropped.")] = None,
    precision: Annotated[str | None, typer.Option(help="fp32 (default: training is measured and tested in fp32), auto, bf16, fp16.")] = None,
    threads: Annotated[int | None, typer.Option("--threads", help="CPU threads (default: the idle cores).")] = None,
    a1111: Annotated[Path | None, typer.Option("--a1111", help="An A1111 install whose models and embeddings are used too.")] = None,
) -> None:
    """Train a textual-inversion embedding, a hypernetwork (A1111's way) or a LoRA (kohya's
    format) on a folder of images.

    The file lands in EMAKI_HOME/embeddings, hypernetworks or loras, ready for
    `emaki generate "1girl, NAME"`, `<hypernet:NAME:0.8>` or `<lora:NAME:0.8>`. Ctrl-C saves and
    stops; --resume goes on.
    """
    # heavy (torch): imported by the command only, so `emaki --help` starts at once
    from emaki.devices import DevicePolicy
    from emaki.training.buckets import parse_buckets
    from emaki.training.params import TrainingParams, parse_number_list

    width, height = parse_size(size) if size is not None else (None, None)
    given: dict[str, Any] = {
        "model": model, "learn_rate": learn_rate, "batch_size": batch_size, "gradient_step": grad_accum,
        "clip_grad_mode": clip_grad, "clip_grad_value": clip_value, "template": template, "width": width,
        "height": height, "varsize": keep_size, "use_weight": alpha_weight, "filename_regex": filename_regex,
        "buckets": list(parse_buckets(buckets)) if buckets is not None else None, "repeats": repeats,
        "filename_join": join, "shuffle_tags": shuffle_tags, "tag_drop_out": tag_dropout,
        "latent_sampling_method": latent_sampling, "save_every": save_every, "preview_every": preview_every,
        "preview_prompt": preview_prompt, "preview_seed": preview_seed, "clip_skip": clip_skip, "seed": seed,
        "resume": resume, "overwrite": overwrite, "log_directory": str(log_dir) if log_dir else None,
        "init_text": init_text, "num_vectors_per_token": vectors, "save_format": save_format,
        "sizes": [int(x) for x in parse_number_list(sizes, "--sizes")] if sizes else None,
        "layer_structure": parse_number_list(layers, "--layers") if layers else None,
        "activation_func": activation, "weight_initialization": init, "add_layer_norm": layer_norm,
        "dropout_structure": parse_number_list(dropout, "--dropout") if dropout else None,
        "network_dim": rank, "network_alpha": alpha, "conv_dim": conv_rank, "conv_alpha": conv_alpha,
        "unet_lr": unet_lr, "text_encoder_lr": te_lr, "optimizer": optimizer, "lr_scheduler": scheduler,
        "lr_warmup_steps": warmup, "min_snr_gamma": min_snr_gamma, "noise_offset": noise_offset,
        "caption_dropout_rate": caption_dropout, "keep_tokens": keep_tokens,
    }
    params = TrainingParams.create(kind=kind, name=name, data=str(data), steps=steps, **training_fields(kind, given))
    policy = DevicePolicy.choose(precision or "fp32", threads=threads)
    from emaki.engine import Engine  # diffusers: imported only by the commands that run a model

    engine = Engine(cli_workspace(a1111), policy)
    cancel = threading.Event()
    started = time.monotonic()
    columns = (TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[speed]}"), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as bar, first_ctrl_c_cancels(cancel):
        task = bar.add_task(f"{kind} {params.name}: loading", total=None, loss="-", speed="")
        first: list[int] = []

        def on_update(update: TrainingUpdate) -> None:
            if update.message:
                bar.console.print(escape(update.message), highlight=False)
            if not first:
                first.append(update.step)
            done = update.step - first[0] + 1
            rate = done / max(time.monotonic() - started, 1e-9)
            bar.update(task, description=f"{kind} {params.name}", total=update.total, completed=update.step,
                       loss=f"{update.loss:.4f}", speed=f"{rate:.2f} it/s")

        outcome = engine.train(params, progress=on_update, cancel=cancel)
    _report(outcome)
    if outcome.cancelled:
        raise Interrupted(f"interrupted at step {outcome.step} of {outcome.total}: saved {outcome.path}; "
                          "run the same command with --resume to go on")
