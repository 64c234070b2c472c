"""Training an embedding or a hypernetwork on a folder of images, as A1111 trains them.

    dataset (images, captions, templates) → policy check → latents cached → the one loop
    (`TrainingLoop`: denoising loss, AdamW, A1111's rate schedule, roll-back on non-finite values)
    → `<name>-<step>` saves, previews and the loss log in the run folder → the trained file in the
    workspace's embeddings/hypernetworks folder (with A1111's `.optim` sidecar and emaki's provenance).

What differs between the kinds is a `Trainee`: the trained tensors, how captions become the UNet's
context, and how the file is written. `run_training` is called by `Engine.train`, which holds the
engine's lock, so a training run and a generation never share the model at once.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image

from emaki.engine.output import png_info
from emaki.engine.patching import ModelHandle
from emaki.engine.pipeline import native_size, plan, run_generation, text_encoder_width
from emaki.engine.policy import ensure_params_allowed
from emaki.engine.vae import latent_scale
from emaki.errors import ParamsError
from emaki.files import atomic_write
from emaki.models.hashes import sha256_file
from emaki.models.loader import LoadedModel
from emaki.models.resolve import demo_model_path
from emaki.networks.embeddings import load_embedding, save_embedding
from emaki.networks.hypernetworks import load_hypernetwork
from emaki.params import GenerationParams
from emaki.prompts import PromptEncoder
from emaki.prompts.embedding_hook import EmbeddingTable, NamedVectors
from emaki.safety import check_training_captions, ensure_allowed
from emaki.safety.embeddings import ensure_trained_embedding_allowed, read_embedding, token_matrix
from emaki.training.artifacts import (
    LossRow,
    plot_losses,
    provenance,
    read_loss_csv,
    read_optim,
    write_loss_csv,
)
from emaki.training.checkpoint import STATE_FILE
from emaki.training.create import attention_widths, new_embedding, new_hypernetwork
from emaki.training.dataset import (
    CaptionMaker,
    LatentCache,
    TrainingImage,
    batch_order,
    captions_for_policy,
    dataset_fingerprint,
    load_images,
)
from emaki.training.errors import NonFiniteLossError, TrainingError
from emaki.training.loop import TrainingLoop, TrainingProgress
from emaki.training.lora import LoraTrainee, lora_trainee, safetensors_metadata
from emaki.training.objective import DiffusionObjective
from emaki.training.params import TrainingParams
from emaki.training.report import TrainingCallback, TrainingOutcome, TrainingUpdate
from emaki.training.schedules import LRSchedule, named_schedule, parse_lr_schedule
from emaki.training.templates import read_template
from emaki.training.trainees import EmbeddingTrainee, HypernetworkTrainee, Trainee

if TYPE_CHECKING:
    from emaki.engine.engine import Engine

FOLDERS = {"embedding": "embeddings", "hypernetwork": "hypernetworks", "lora": "loras"}
# Anime checkpoints were trained on booru tags, not on "a photo of ..." sentences.
DEFAULT_TEMPLATES = {"embedding": "tags_filewords", "hypernetwork": "filewords", "lora": "filewords"}
SEED_STRIDE = 1_000_003  # micro-batch i of a run seeded s draws from seed s·stride + i


class _BatchCursor:
    """Batches by micro-batch index, drawn in order from `batch_order` (a resumed run skips ahead)."""

    def __init__(self, images: list[TrainingImage], batch_size: int, seed: int) -> None:
        self._order = batch_order(images, batch_size, torch.Generator().manual_seed(seed))
        self._next = 0
        self._current: list[int] = []

    def at(self, index: int) -> list[int]:
        if index < self._next - 1:
            raise TrainingError(f"batch {index} was asked for after batch {self._next - 1}")
        while self._next <= index:
            self._current = next(self._order)
            self._next += 1
        return self._current


@dataclass
class _Run:
    """The state one run keeps between steps: its log and what it wrote."""

    engine: Engine
    params: TrainingParams
    model: LoadedModel
    trainee: Trainee
    log_dir: Path
    suffix: str
    size: tuple[int, int]
    preview_prompt: str
    steps_per_epoch: int
    record: dict[str, Any]
    rows: list[LossRow] = field(default_factory=list)
    saves: list[Path] = field(default_factory=list)
    previews: list[Path] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    rollbacks: int = 0
    last_preview: Image.Image | None = None

    @property
    def loss_csv(self) -> Path:
        return self.log_dir / "loss.csv"

    def write_log(self) -> Path | None:
        write_loss_csv(self.loss_csv, self.rows)
        return plot_losses(self.log_dir / "loss.png", self.rows, f"{self.params.kind} {self.params.name}")

    def preview(self, step: int) -> Path | None:
        """A preview image with the network as trained so far; a failure is reported, never fatal."""
        p = self.params
        self.trainee.train_mode(False)
        try:
            gen = GenerationParams.create(prompt=self.preview_prompt, seed=p.preview_seed, steps=p.preview_steps,
                                          width=self.size[0], height=self.size[1], clip_skip=p.clip_skip,
                                          emphasis=p.emphasis, model=p.model)
            ensure_params_allowed(gen)
            scan = self.engine.networks.embeddings(text_encoder_width(self.model))
            with ModelHandle(self.model) as handle:
                run = plan(gen, handle, self.engine.policy, self.engine.networks)
                result = run_generation(run, self.trainee.preview_embeddings(scan), folder=None, cancel=None,
                                        progress=None, preview_map=None)
            image = result.images[0]
            target = self.log_dir / "images" / f"{p.name}-{step}.png"
            with atomic_write(target) as tmp:
                image.image.save(tmp, format="PNG", pnginfo=png_info(image.infotext))
            self.last_preview = image.image
            self.previews.append(target)
            return target
        except Exception as e:  # noqa: BLE001  (a preview must never end a training run)
            self.messages.append(f"step {step}: the preview failed ({type(e).__name__}: {e}); training goes on")
            return None
        finally:
            self.trainee.train_mode(True)


def _folder_for(engine: Engine, params: TrainingParams) -> Path:
    folder = engine.workspace.folders(FOLDERS[params.kind])[0]  # type: ignore[arg-type]
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def trained_file(engine: Engine, params: TrainingParams) -> Path:
    """Where the trained network is written (and read from, when resuming)."""
    safetensors = params.kind == "lora" or (params.kind == "embedding" and params.save_format == "safetensors")
    suffix = ".safetensors" if safetensors else ".pt"
    return _folder_for(engine, params) / f"{params.name}{suffix}"


def log_directory(engine: Engine, params: TrainingParams) -> Path:
    if params.log_directory:
        return Path(params.log_directory).expanduser()
    return engine.workspace.home / "training" / FOLDERS[params.kind] / params.name


def _policy_items(images: list[TrainingImage], lines: list[str], name: str) -> list[tuple[str, str]]:
    """Each caption and template line, and each caption with every template line (training joins
    them at random, so every pairing will be drawn)."""
    items = captions_for_policy(images, lines, name)
    templates = " ; ".join(line.replace("[name]", name).replace("[filewords]", "") for line in lines)
    return items + [(f"{image.path} with the template", f"{templates} ; {image.filewords}") for image in images]


def _state_step(state_dir: Path) -> int | None:
    path = state_dir / STATE_FILE
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        return int(state["step"])
    except Exception:  # noqa: BLE001  (an unreadable state is not resumed from; the file is)
        return None


def _open_trainee(engine: Engine, params: TrainingParams, model: LoadedModel, path: Path,
                  encoder: PromptEncoder, optimizer_state: dict[str, Any], images: list[TrainingImage]) -> Trainee:
    """The network to train: loaded from `path` when resuming (its `.optim` into `optimizer_state`),
    else new."""
    parts = model.components
    width = text_encoder_width(model)
    resuming = params.resume and path.exists()
    if params.kind == "embedding":
        if resuming:
            embedding = load_embedding(path)
            if embedding.width != width:
                raise ParamsError(f"{path}: width {embedding.width} does not fit this model's text encoder ({width})")
            sidecar = read_optim(path, embedding.checksum())
        else:
            embedding = new_embedding(params.name, parts.text_encoder, parts.tokenizer, init_text=params.init_text,
                                      num_vectors_per_token=params.num_vectors_per_token)
            sidecar = None
        vectors = embedding.vectors.detach().clone().requires_grad_(True)
        others = {k: v for k, v in engine.networks.embeddings(width).loaded.items() if k != params.name}
        table = EmbeddingTable({**others, params.name: NamedVectors(params.name, vectors)}, parts.tokenizer)
        encoder.embeddings = table
        trainee: Trainee = EmbeddingTrainee(params.name, vectors, encoder, model, embedding.step or 0)
    elif params.kind == "lora":
        trainee = lora_trainee(params, model, encoder, images)
        encoder.embeddings = engine.networks.embeddings(width).lookup(parts.tokenizer)
        sidecar = None
        if resuming:
            assert isinstance(trainee, LoraTrainee)
            trainee.load(path)
            sidecar = read_optim(path, str(safetensors_metadata(path).get("sshs_model_hash", ""))[:10])
    else:
        if resuming:
            network = load_hypernetwork(path)
            sidecar = read_optim(path, sha256_file(path)[:10])
        else:
            sizes = params.sizes or attention_widths(parts.unet, width)
            network = new_hypernetwork(params.name, sizes, layer_structure=params.layer_structure,
                                       activation_func=params.activation_func or "linear",
                                       weight_initialization=params.weight_initialization or "Normal",
                                       add_layer_norm=params.add_layer_norm,
                                       dropout_structure=params.dropout_structure, seed=params.seed)
            sidecar = None
        network.name = params.name
        name = str((sidecar or {}).get("optimizer_name") or "AdamW")
        encoder.embeddings = engine.networks.embeddings(width).lookup(parts.tokenizer)
        trainee = HypernetworkTrainee(network, encoder, model, network.step or 0, name)
    if sidecar is not None:
        optimizer_state.update(sidecar["optimizer_state_dict"])
    return trainee


def _refuse_smuggled_words(trainee: Trainee, model: LoadedModel, step: int, captions: list[tuple[str, str]]) -> None:
    """An embedding whose trained vectors read as refused words (copies of the token vectors of
    "child nude" under another name), alone or in front of its captions, is not saved: raise
    `PolicyViolation` (`emaki.safety.embeddings`)."""
    if isinstance(trainee, EmbeddingTrainee):
        parts = model.components
        reading = read_embedding(trainee.vectors, token_matrix(parts.text_encoder), parts.tokenizer)
        ensure_trained_embedding_allowed(trainee.name, step, reading, captions)


def run_training(engine: Engine, params: TrainingParams, *, progress: TrainingCallback | None = None,
                 cancel: threading.Event | None = None) -> TrainingOutcome:
    """Train `params.kind` `params.name` up to `params.steps`; see the module docstring."""
    ensure_allowed(params.name)
    if params.preview_prompt:
        ensure_allowed(params.preview_prompt)
    path = trained_file(engine, params)
    if path.exists() and not (params.resume or params.overwrite):
        raise ParamsError(f"{path}: already exists; --overwrite replaces it, --resume goes on training it")
    log_dir = log_directory(engine, params)
    state_dir = log_dir / "state"
    state_step = _state_step(state_dir) if params.resume else None
    if params.resume and not path.exists() and state_step is None:
        raise ParamsError(f"{path}: nothing to resume (no such file and no saved run in {state_dir})")
    lines = read_template(params.template or DEFAULT_TEMPLATES[params.kind])
    model = engine.load(params.model)
    params = params.with_defaults(demo_model=Path(model.source) == demo_model_path())
    parts = model.components
    modules: tuple[torch.nn.Module, ...] = (parts.unet, parts.vae, parts.text_encoder)
    for module in modules:  # only the network is trained: no gradients for the model's own weights
        module.to(engine.policy.device)
        module.requires_grad_(False)
    native = native_size(model)
    size = (params.width, params.height) if params.width and params.height else (native, native)
    buckets = (params.buckets[0], params.buckets[1], params.buckets[2]) if params.buckets else None
    images = load_images(Path(params.data).expanduser(), size=size, varsize=params.varsize,
                         use_weight=params.use_weight, filename_regex=params.filename_regex,
                         filename_join=params.filename_join, buckets=buckets, repeats=params.repeats)
    check_training_captions(_policy_items(images, lines, params.name), network_name=params.name)

    encoder = PromptEncoder(parts.text_encoder, parts.tokenizer, clip_skip=params.clip_skip, emphasis=params.emphasis)
    optimizer_state: dict[str, Any] = {}
    trainee = _open_trainee(engine, params, model, path, encoder, optimizer_state, images)
    try:
        return _train(engine, params, model, trainee, images, lines, size, path, log_dir, state_step,
                      optimizer_state, progress, cancel)
    finally:
        trainee.close()


def _train(engine: Engine, params: TrainingParams, model: LoadedModel, trainee: Trainee,
           images: list[TrainingImage], lines: list[str], size: tuple[int, int], path: Path, log_dir: Path,
           state_step: int | None, optimizer_state: dict[str, Any], progress: TrainingCallback | None,
           cancel: threading.Event | None) -> TrainingOutcome:
    parts = model.components
    start = trainee.step
    exact = state_step is not None and state_step >= start
    if not params.resume:
        (log_dir / "state" / STATE_FILE).unlink(missing_ok=True)  # a new run never resumes an old one
    reached = state_step if exact and state_step is not None else start
    if reached >= params.steps:
        raise ParamsError(f"{path}: already trained to step {reached}; ask for more steps than that")
    rates = parse_lr_schedule(params.resolved_learn_rate)
    optimizer = trainee.optimizer(rates.base_lr)
    chosen_rates = [group["lr"] for group in optimizer.param_groups]
    if optimizer_state and not exact:
        optimizer.load_state_dict(optimizer_state)
        for group, rate in zip(optimizer.param_groups, chosen_rates, strict=True):
            group["lr"] = rate  # this run's rates, the file's moments
    schedule: LRSchedule = rates
    total = rates.steps(params.steps)
    if params.kind == "lora":  # kohya's named schedulers, over the whole run
        schedule, total = named_schedule(params.resolved_lr_scheduler, params.lr_warmup_steps, params.steps), params.steps
    clip = parse_lr_schedule(params.clip_grad_value).rate if params.clip_grad_mode != "disabled" else None

    vae = parts.vae
    scale = latent_scale(vae)

    weight = next(vae.parameters())

    def encode(pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dist = vae.encode(pixels.to(device=weight.device, dtype=weight.dtype)).latent_dist
        return dist.mean.float().cpu() * scale, dist.std.float().cpu() * scale

    cache = LatentCache(images, encode, params.latent_sampling_method,
                        torch.Generator().manual_seed(params.seed), use_weight=params.use_weight)
    cursor = _BatchCursor(images, params.batch_size, params.seed)
    objective = DiffusionObjective(parts.unet, parts.alphas_cumprod,
                                   parts.config.schedule.get("prediction_type", "epsilon"),
                                   noise_offset=params.noise_offset, min_snr_gamma=params.min_snr_gamma)

    def loss(index: int) -> torch.Tensor:
        batch = cursor.at(index)
        captions = CaptionMaker(lines, params.name, shuffle_tags=params.shuffle_tags,
                                tag_drop_out=params.tag_drop_out, rng=random.Random(params.seed * SEED_STRIDE + index),
                                keep_tokens=params.keep_tokens, caption_dropout=params.caption_dropout_rate)
        texts = [captions.make(images[i].filewords) for i in batch]
        latents = torch.stack([cache.latent(i) for i in batch])
        weights = [cache.weight(i) for i in batch]
        weight = torch.stack([w for w in weights if w is not None]) if weights[0] is not None else None
        generator = torch.Generator().manual_seed(params.seed * SEED_STRIDE + index)
        return objective.loss(latents, trainee.context(texts), weight, generator)

    per_epoch = max(1, sum(image.repeats for image in images) // params.batch_size // params.gradient_step)
    first_caption = CaptionMaker(lines[:1], params.name, shuffle_tags=False, tag_drop_out=0.0,
                                 rng=random.Random(0)).make(images[0].filewords)
    record = provenance(params.kind, params.model_dump(), model_name=model.name, model_hash=model.hash,
                        dataset_size=len(images), dataset_sha256=dataset_fingerprint(images), step=start)
    earlier = read_loss_csv(log_dir / "loss.csv", up_to=state_step if exact and state_step else start)
    run = _Run(engine, params, model, trainee, log_dir, path.suffix, size, params.preview_prompt or first_caption,
               per_epoch, record, rows=earlier if params.resume else [])
    loop = TrainingLoop(loss, optimizer, total=total, schedule=schedule,
                        accumulate=params.gradient_step, start=start,
                        clip_grad_norm=clip if params.clip_grad_mode == "norm" else None,
                        clip_grad_value=clip if params.clip_grad_mode == "value" else None,
                        checkpoint_dir=log_dir / "state", checkpoint_every=params.save_every, resume=exact)

    captions = _policy_items(images, lines, params.name)  # a trained embedding is judged with them

    def on_step(p: TrainingProgress) -> None:
        kind, name = params.kind, params.name
        epoch, epoch_step = p.step // per_epoch, p.step % per_epoch
        if p.rolled_back:
            run.rollbacks = p.skipped
            message = (f"step {p.step + 1}: the loss or its gradient was not finite at learning rate {p.lr:g}; "
                       f"rolled back to step {p.step} and halved the rate")
            run.messages.append(message)
            if progress is not None:
                progress(TrainingUpdate(kind, name, p.step, loop.total, p.loss, p.lr, epoch, epoch_step,
                                        run.rollbacks, message=message))
            return
        run.rows.append(LossRow(p.step, epoch, epoch_step, p.loss, p.lr))
        saved = preview = None
        if params.save_every and p.step % params.save_every == 0 and p.step < loop.total:
            _refuse_smuggled_words(trainee, model, p.step, captions)
            saved = trainee.save(log_dir / FOLDERS[kind] / f"{name}-{p.step}{path.suffix}", p.step, None,
                                 {**record, "step": p.step})
            run.saves.append(saved)
            run.write_log()
        if params.preview_every and p.step % params.preview_every == 0:
            messages = len(run.messages)
            preview = run.preview(p.step)
            if progress is not None and len(run.messages) > messages:
                progress(TrainingUpdate(kind, name, p.step, loop.total, p.loss, p.lr, epoch, epoch_step,
                                        run.rollbacks, message=run.messages[-1]))
        if progress is not None:
            progress(TrainingUpdate(kind, name, p.step, loop.total, p.loss, p.lr, epoch, epoch_step,
                                    run.rollbacks, saved=saved, preview=preview))

    try:
        result = loop.run(on_step, cancel)
    except NonFiniteLossError:
        # The weights are the last good ones (the loop rolled the others back): keep them.
        _refuse_smuggled_words(trainee, model, run.rows[-1].step if run.rows else start, captions)
        _finish(run, path, optimizer, run.rows[-1].step if run.rows else start)
        raise
    _refuse_smuggled_words(trainee, model, result.step, captions)
    return _finish(run, path, optimizer, result.step, cancelled=result.cancelled, total=loop.total)


def _finish(run: _Run, path: Path, optimizer: torch.optim.Optimizer, step: int, *, cancelled: bool = False,
            total: int | None = None) -> TrainingOutcome:
    """Write the trained file (and its `.optim`), the embedding card, the loss log and plot."""
    params = run.params
    record = {**run.record, "step": step}
    run.trainee.save(path, step, optimizer, record)
    if isinstance(run.trainee, EmbeddingTrainee):
        card = run.log_dir / "image_embeddings" / f"{params.name}-{step}.png"
        card.parent.mkdir(parents=True, exist_ok=True)
        save_embedding(run.trainee.embedding(step, record), card, picture=run.last_preview)
    plot = run.write_log()
    final = run.rows[-1].loss if run.rows else None
    return TrainingOutcome(params.kind, params.name, path, step, total if total is not None else params.steps,
                           cancelled, final, run.rollbacks, run.log_dir, run.loss_csv, plot, list(run.previews),
                           list(run.saves), list(run.messages))
