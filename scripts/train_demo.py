"""Train the bundled demo model from scratch on CPU: VAE first, then UNet + CLIP text encoder.

    .venv/bin/python scripts/train_demo.py                       # the shipped run
    .venv/bin/python scripts/train_demo.py --vae-steps 50 --unet-steps 50 --out /tmp/t  # smoke

Data: every training-distribution face of `emaki.demo.faces` (11,520 attribute combinations,
64x64). Captions are re-drawn every step: random tag order, each tag kept with probability
`--tag-keep`, and the whole caption replaced by "" with probability `--uncond` (classifier-free
guidance dropout, so negative prompts work). Noise: SD's scaled-linear schedule, 1000 steps,
epsilon prediction, MSE with min-SNR-5 weighting. Latents are scaled by 1 / std of the VAE's
latents (stored as the VAE `scaling_factor`). EMA weights of the UNet and text encoder are what
gets exported. Everything is seeded; `--max-minutes` only stops a stage early (the steps done
are logged, so the run can be repeated exactly with `--vae-steps/--unet-steps`).
Every stage runs on `emaki.training.TrainingLoop`: its state (weights, optimizer, EMA, RNGs) goes
to `--work/<stage>-run/` every `--ckpt-every` steps, and `--resume` goes on exactly from there
(with this run's learning rates and step counts, so a finished stage can be taken further).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import random
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open

from emaki.demo.faces import all_attributes, caption, draw_face
from emaki.files import atomic_write
from emaki.models.components import SDComponents, sd_alphas_cumprod
from emaki.models.configs import SD1_SCHEDULE, ModelConfig
from emaki.models.tokenizer import load_clip_tokenizer
from emaki.training import (
    EMA,
    ProgressCallback,
    TrainingLoop,
    TrainingProgress,
    TrainingResult,
    constant,
    cosine,
    warmup,
)

REPO = Path(__file__).resolve().parents[1]


def demo_config(scaling_factor: float = 1.0) -> ModelConfig:
    """The demo model's sizes: 4x VAE (64x64 -> 4x16x16), 3M-param UNet, 3-layer 128-wide CLIP."""
    return ModelConfig(
        unet={
            "sample_size": 16,
            "in_channels": 4,
            "out_channels": 4,
            "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
            "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
            "block_out_channels": [32, 64, 128],
            "layers_per_block": 1,
            "cross_attention_dim": 128,
            "attention_head_dim": 4,
            "norm_num_groups": 16,
        },
        vae={
            "in_channels": 3,
            "out_channels": 3,
            "down_block_types": ["DownEncoderBlock2D"] * 3,
            "up_block_types": ["UpDecoderBlock2D"] * 3,
            "block_out_channels": [16, 32, 64],
            "layers_per_block": 1,
            "latent_channels": 4,
            "norm_num_groups": 16,
            "sample_size": 64,
            "scaling_factor": scaling_factor,
        },
        text_encoder={
            "vocab_size": 49408,
            "hidden_size": 128,
            "intermediate_size": 512,
            "num_hidden_layers": 3,
            "num_attention_heads": 2,
            "max_position_embeddings": 77,
            "hidden_act": "quick_gelu",
            "layer_norm_eps": 1e-5,
            "projection_dim": 128,
            "bos_token_id": 49406,
            "eos_token_id": 49407,
            "pad_token_id": 1,
        },
        schedule=dict(SD1_SCHEDULE),
    )


def log(msg: str, logfile: Path | None) -> None:
    line = f"[{time.strftime('%H:%M:%S')}] {msg}"
    print(line, flush=True)
    if logfile:
        with logfile.open("a") as f:
            f.write(line + "\n")


def draw_dataset() -> torch.Tensor:
    """All 11,520 faces as a uint8 tensor N x 3 x 64 x 64."""
    arrays = [np.asarray(draw_face(a)) for a in all_attributes()]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def to_unit(images: torch.Tensor) -> torch.Tensor:
    return images.float() / 127.5 - 1.0


def save_atomic(obj: object, path: Path) -> None:
    with atomic_write(path) as tmp:
        torch.save(obj, tmp)


def watch(stage: str, logfile: Path, metrics: list[tuple[float, ...]],
          describe: Callable[[np.ndarray, TrainingProgress], str],
          minutes: float = 0.0) -> tuple[ProgressCallback, threading.Event]:
    """A stage's progress callback: logs the mean of `metrics` (appended by the loss) every 25
    steps and at the end, and sets the returned event once `minutes` have passed (0: never), which
    makes the loop save its state and stop."""
    start, stop = time.time(), threading.Event()

    def on_step(p: TrainingProgress) -> None:
        if p.step % 25 == 0 or p.step == p.total:
            log(f"{stage} step {p.step} {describe(np.mean(metrics, axis=0), p)} "
                f"({time.time() - start:.0f}s)", logfile)
            metrics.clear()
        if minutes and time.time() - start > minutes * 60:
            stop.set()

    return on_step, stop


def run_stage(stage: str, loop: TrainingLoop, on_step: ProgressCallback, stop: threading.Event,
              logfile: Path) -> TrainingResult:
    if loop.resume and loop.state_file is not None and loop.state_file.exists():
        log(f"{stage}: resuming from {loop.state_file}", logfile)
    result = loop.run(on_step, stop)
    if result.skipped:
        log(f"{stage}: {result.skipped} steps rolled back (loss not finite; rate now x{result.lr_scale:g})", logfile)
    if result.cancelled:
        log(f"{stage}: time budget reached at step {result.step}", logfile)
    return result


def train_vae(args: argparse.Namespace, images: torch.Tensor, work: Path, logfile: Path) -> None:
    from diffusers import AutoencoderKL

    torch.manual_seed(args.seed)
    vae = AutoencoderKL(**demo_config().vae)
    opt = torch.optim.AdamW(vae.parameters(), lr=args.vae_lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(args.seed + 1)
    metrics: list[tuple[float, ...]] = []

    def loss(_: int) -> torch.Tensor:
        idx = torch.randint(0, len(images), (args.vae_batch,), generator=gen)
        x = to_unit(images[idx])
        if args.vae_crop:  # the VAE is convolutional: small random crops train it for less
            c = args.vae_crop
            oy, ox = (int(v) for v in torch.randint(0, x.shape[-1] - c + 1, (2,), generator=gen))
            x = x[:, :, oy:oy + c, ox:ox + c]
        post = vae.encode(x).latent_dist
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=gen)
        rec = vae.decode(z).sample
        rec_loss = F.mse_loss(rec, x) + F.l1_loss(rec, x)
        kl = post.kl().mean() / x[0].numel()
        metrics.append((rec_loss.item(), kl.item()))
        return rec_loss + args.vae_kl * kl

    params = sum(p.numel() for p in vae.parameters())
    log(f"vae: {params:,} params, {args.vae_steps} steps, batch {args.vae_batch}", logfile)
    vae.train()
    loop = TrainingLoop(loss, opt, args.vae_steps, checkpoint_dir=work / "vae-run",
                        checkpoint_every=args.ckpt_every, resume=args.resume, rngs=[gen])
    on_step, stop = watch("vae", logfile, metrics, lambda m, p: f"rec {m[0]:.5f} kl/px {m[1]:.3f}",
                          args.max_minutes * args.vae_share)
    run_stage("vae", loop, on_step, stop, logfile)
    save_atomic(vae.state_dict(), work / "vae_stage1.pt")
    save_atomic(vae.state_dict(), work / "vae.pt")


def train_decoder(args: argparse.Namespace, images: torch.Tensor, work: Path, logfile: Path) -> None:
    """Fine-tune the VAE decoder with the encoder frozen: better colours, same latents.

    Because the encoder does not change, this can run before, after or alongside the UNet stage
    and gives the same result. The loss adds a colour term (MSE of 4x4 average-pooled images)
    since flat colour regions are what the demo's evaluator reads. The lr follows a cosine over
    `--decoder-steps`; the stage stops at `--decoder-stop-at`, part-way down it.
    """
    from diffusers import AutoencoderKL

    vae = AutoencoderKL(**demo_config().vae)
    vae.load_state_dict(torch.load(work / "vae_stage1.pt"))
    vae.requires_grad_(False)
    trainable = list(vae.decoder.parameters()) + list(vae.post_quant_conv.parameters())
    for q in trainable:
        q.requires_grad_(True)
    opt = torch.optim.AdamW(trainable, lr=args.decoder_lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(args.seed + 5)
    metrics: list[tuple[float, ...]] = []

    def loss(_: int) -> torch.Tensor:
        idx = torch.randint(0, len(images), (args.decoder_batch,), generator=gen)
        x = to_unit(images[idx])
        with torch.no_grad():
            post = vae.encode(x).latent_dist
            z = post.mean + post.std * torch.randn(post.mean.shape, generator=gen)
        rec = vae.decode(z).sample
        color = F.mse_loss(F.avg_pool2d(rec, 4), F.avg_pool2d(x, 4))
        rec_loss = F.mse_loss(rec, x) + F.l1_loss(rec, x)
        metrics.append((rec_loss.item(), color.item()))
        return rec_loss + 2.0 * color

    steps = args.decoder_steps
    if 0 < args.decoder_stop_at <= args.decoder_steps:
        steps = args.decoder_stop_at
    log(f"decoder: {sum(q.numel() for q in trainable):,} params, {steps} of {args.decoder_steps} "
        f"steps, batch {args.decoder_batch}", logfile)
    loop = TrainingLoop(loss, opt, steps, schedule=cosine(args.decoder_steps),
                        checkpoint_dir=work / "decoder-run", checkpoint_every=args.ckpt_every,
                        resume=args.resume, rngs=[gen])
    on_step, stop = watch("decoder", logfile, metrics, lambda m, p: f"rec {m[0]:.5f} colour {m[1]:.5f}",
                          args.decoder_minutes)
    result = run_stage("decoder", loop, on_step, stop, logfile)
    if result.step == steps < args.decoder_steps:
        log(f"decoder: stopped at step {steps} (--decoder-stop-at)", logfile)
    save_atomic(vae.state_dict(), work / "vae.pt")


def tinted(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """`x` (in [-1, 1]) through random photo-filter tints: each image mixed, by a random share, with
    its grey level times a random colour (each channel 0.55-1.05) plus a small offset. An SD VAE has
    seen every colour; the demo VAE saw only the demo palette, and its encoder pulled tinted skin back
    to the palette's skin, so no network trained on a tinted style could ever reproduce it."""
    n = x.shape[0]
    unit = (x + 1) / 2
    grey = (0.299 * unit[:, 0] + 0.587 * unit[:, 1] + 0.114 * unit[:, 2]).unsqueeze(1)
    tint = 0.55 + 0.5 * torch.rand(n, 3, 1, 1, generator=gen)
    offset = 0.1 * torch.rand(n, 3, 1, 1, generator=gen)
    share = torch.rand(n, 1, 1, 1, generator=gen)
    return ((1 - share) * unit + share * (grey * tint + offset)).clamp(0, 1) * 2 - 1


def train_colours(args: argparse.Namespace, images: torch.Tensor, work: Path, logfile: Path) -> None:
    """Fine-tune the VAE of the model at `--out` on tinted faces (`tinted`) and write the model back
    with only its VAE changed. Each batch also holds untinted faces whose latents are kept near the
    old encoder's and whose decoded pixels near the old decoder's, so the UNet's latents keep their
    meaning and untinted pictures change by about 2 levels of 255."""
    from emaki.models.checkpoint import save_single_file
    from emaki.models.loader import load_single_file

    components = load_single_file(args.out)
    vae = components.vae.float().train()
    before = copy.deepcopy(vae).eval().requires_grad_(False)
    vae.requires_grad_(True)
    opt = torch.optim.AdamW(vae.parameters(), lr=args.colours_lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(args.seed + 6)
    plain = args.colours_batch // 4
    metrics: list[tuple[float, ...]] = []

    def loss(_: int) -> torch.Tensor:
        x = to_unit(images[torch.randint(0, len(images), (args.colours_batch,), generator=gen)])
        shown, kept = tinted(x[plain:], gen), x[:plain]
        rec = vae.decode(vae.encode(shown).latent_dist.mean).sample
        colour = F.mse_loss(rec, shown) + 2.0 * F.mse_loss(F.avg_pool2d(rec, 4), F.avg_pool2d(shown, 4))
        with torch.no_grad():
            old_latents = before.encode(kept).latent_dist.mean
            old_pixels = before.decode(old_latents).sample
        keep = (F.mse_loss(vae.encode(kept).latent_dist.mean, old_latents)
                + 10.0 * F.mse_loss(vae.decode(old_latents).sample, old_pixels))
        metrics.append((colour.item(), keep.item()))
        return colour + keep

    log(f"colours: VAE of {args.out}, {args.colours_steps} steps, batch {args.colours_batch} "
        f"({plain} untinted), lr {args.colours_lr}", logfile)
    loop = TrainingLoop(loss, opt, args.colours_steps, checkpoint_dir=work / "colours-run",
                        checkpoint_every=args.ckpt_every, resume=args.resume, rngs=[gen])
    on_step, stop = watch("colours", logfile, metrics, lambda m, p: f"tinted {m[0]:.4f} keep {m[1]:.5f}")
    result = run_stage("colours", loop, on_step, stop, logfile)
    if result.cancelled:
        return
    with safe_open(str(args.out), "pt") as f:
        meta = dict(f.metadata() or {})
    meta.pop("emaki_config", None)  # save_single_file writes it again
    meta["emaki_demo_colours"] = json.dumps({"steps": args.colours_steps, "batch": args.colours_batch,
                                             "lr": args.colours_lr, "seed": args.seed})
    save_single_file(dataclasses.replace(components, vae=vae.eval()), args.out, dtype=torch.float16, metadata=meta)
    log(f"colours: wrote {args.out} (UNet and text encoder unchanged)", logfile)


@torch.no_grad()
def encode_dataset(images: torch.Tensor, work: Path, logfile: Path) -> tuple[torch.Tensor, torch.Tensor, float]:
    from diffusers import AutoencoderKL

    vae = AutoencoderKL(**demo_config().vae)
    vae.load_state_dict(torch.load(work / "vae_stage1.pt"))  # the encoder never changes after it
    vae.eval()
    means, stds = [], []
    for chunk in images.split(512):
        post = vae.encode(to_unit(chunk)).latent_dist
        means.append(post.mean)
        stds.append(post.std)
    mean, std = torch.cat(means), torch.cat(stds)
    gen = torch.Generator().manual_seed(0)
    sample = mean + std * torch.randn(mean.shape, generator=gen)
    scaling = float(1.0 / sample.std())
    # Reconstruction quality of the whole data set, for the log.
    rec = torch.cat([vae.decode(m).sample for m in mean[:1024].split(256)])
    err = (rec.clamp(-1, 1) - to_unit(images[:1024])).abs().mean().item() * 127.5
    log(f"latents: mean {mean.mean():.3f} std {sample.std():.3f} -> scaling_factor {scaling:.5f}; "
        f"VAE mean abs error {err:.2f}/255 on 1024 faces", logfile)
    return mean, std, scaling


def training_caption(attrs, rng: random.Random, args: argparse.Namespace) -> str:
    """A caption in random tag order with tags dropped at random. A share (`--short-captions`)
    keeps only a few tags and half of those lose `1girl, solo`, so that prompts of one or two
    tags ("red hair" as a negative prompt, "1girl" alone) are ones the model has seen."""
    if rng.random() >= args.short_captions:
        return caption(attrs, rng, keep=args.tag_keep)
    text = caption(attrs, rng, keep=args.short_keep)
    return text.removeprefix("1girl, solo").lstrip(", ") if rng.random() < 0.5 else text


def unet_schedule(args: argparse.Namespace) -> Callable[[int], float]:
    """Linear warm-up over `--warmup` steps; then constant, or a cosine decay to `--min-lr` over
    the last `--decay-steps` of `--unet-steps`."""
    if args.decay_steps <= 0:
        return warmup(args.warmup, constant())
    start = args.unet_steps - args.decay_steps
    return warmup(args.warmup, cosine(args.decay_steps, end=args.min_lr, start=start))


def train_unet(args: argparse.Namespace, images: torch.Tensor, work: Path, logfile: Path) -> float:
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    mean, std, scaling = encode_dataset(images, work, logfile)
    config = demo_config(scaling)
    attrs = all_attributes()
    tokenizer = load_clip_tokenizer()
    torch.manual_seed(args.seed + 2)
    unet = UNet2DConditionModel(**config.unet)
    text = CLIPTextModel(CLIPTextConfig(**config.text_encoder))
    params = list(unet.parameters()) + list(text.parameters())
    opt = torch.optim.AdamW(params, lr=args.unet_lr, weight_decay=0.01)
    ema = EMA(params, args.ema, warmup=True)
    alphas = sd_alphas_cumprod(config).float()
    snr = alphas / (1 - alphas)
    weight = torch.clamp(snr, max=5.0) / snr  # min-SNR-5 (Hang et al. 2023), eps-prediction
    gen = torch.Generator().manual_seed(args.seed + 3)
    rng = random.Random(args.seed + 4)
    metrics: list[tuple[float, ...]] = []

    def loss(_: int) -> torch.Tensor:
        idx = torch.randint(0, len(attrs), (args.unet_batch,), generator=gen)
        z = (mean[idx] + std[idx] * torch.randn(mean[idx].shape, generator=gen)) * scaling
        captions = ["" if rng.random() < args.uncond else training_caption(attrs[i], rng, args)
                    for i in idx.tolist()]
        ids = tokenizer(captions, padding="max_length", max_length=77, truncation=True,
                        return_tensors="pt").input_ids
        t = torch.randint(0, 1000, (args.unet_batch,), generator=gen)
        noise = torch.randn(z.shape, generator=gen)
        a = alphas[t].view(-1, 1, 1, 1)
        noisy = a.sqrt() * z + (1 - a).sqrt() * noise
        cond = text(ids).last_hidden_state
        pred = unet(noisy, t, cond).sample
        per = F.mse_loss(pred, noise, reduction="none").mean(dim=(1, 2, 3))
        metrics.append((per.mean().item(),))
        return (per * weight[t]).mean()

    def save_weights(step: int) -> None:
        """What `export` reads: the weights, their EMA and the latent scaling."""
        ema_unet, ema_text = copy.deepcopy(unet), copy.deepcopy(text)
        ema.copy_to(list(ema_unet.parameters()) + list(ema_text.parameters()))
        save_atomic({"unet": unet.state_dict(), "text": text.state_dict(), "ema_unet": ema_unet.state_dict(),
                     "ema_text": ema_text.state_dict(), "step": step, "scaling_factor": scaling},
                    work / "unet.pt")

    n_unet = sum(p.numel() for p in unet.parameters())
    n_text = sum(p.numel() for p in text.parameters())
    log(f"unet: {n_unet:,} params, text encoder {n_text:,}; {args.unet_steps} steps, "
        f"batch {args.unet_batch}, lr {args.unet_lr}", logfile)
    unet.train()
    text.train()
    loop = TrainingLoop(loss, opt, args.unet_steps, schedule=unet_schedule(args), clip_grad_norm=1.0,
                        ema=ema, checkpoint_dir=work / "unet-run", checkpoint_every=args.ckpt_every,
                        resume=args.resume, rngs=[gen, rng])
    log_step, stop = watch("unet", logfile, metrics, lambda m, p: f"mse {m[0]:.4f} lr {p.lr:.2e}",
                           args.max_minutes * (1 - args.vae_share))

    def on_step(p: TrainingProgress) -> None:
        log_step(p)
        if p.checkpoint is not None and p.step < p.total:  # the last one is written below
            save_weights(p.step)

    result = run_stage("unet", loop, on_step, stop, logfile)
    save_weights(result.step)
    return scaling


def export(work: Path, out: Path, logfile: Path, hyper: dict) -> None:
    """EMA weights + trained VAE -> one LDM-layout single file (fp16) with the config inside."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from emaki.models.checkpoint import save_single_file

    state = torch.load(work / "unet.pt")
    config = demo_config(state["scaling_factor"])
    unet = UNet2DConditionModel(**config.unet)
    unet.load_state_dict(state["unet" if hyper.get("export_raw") else "ema_unet"])
    text = CLIPTextModel(CLIPTextConfig(**config.text_encoder))
    text.load_state_dict(state["text" if hyper.get("export_raw") else "ema_text"])
    vae = AutoencoderKL(**config.vae)
    vae.load_state_dict(torch.load(work / "vae.pt"))
    comps = SDComponents(unet.eval(), vae.eval(), text.eval(), load_clip_tokenizer(), config)
    hyper = dict(hyper, unet_steps_done=state["step"])
    meta = {"emaki_demo": json.dumps(hyper), "modelspec.title": "emaki demo (chibi faces)"}
    save_single_file(comps, out, dtype=torch.float16, metadata=meta)
    log(f"exported {out} ({out.stat().st_size:,} bytes)", logfile)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stage", choices=["all", "vae", "decoder", "unet", "export", "colours"], default="all")
    p.add_argument("--vae-steps", type=int, default=1500)
    p.add_argument("--vae-batch", type=int, default=32)
    p.add_argument("--vae-crop", type=int, default=0, help="train the VAE on random crops (0: whole)")
    p.add_argument("--vae-lr", type=float, default=2e-3)
    p.add_argument("--vae-kl", type=float, default=1e-3, help="weight of per-pixel KL")
    p.add_argument("--decoder-steps", type=int, default=3000)
    p.add_argument("--decoder-batch", type=int, default=16)
    p.add_argument("--decoder-lr", type=float, default=1e-3)
    p.add_argument("--decoder-stop-at", type=int, default=1500,
                   help="stop here, part-way through the --decoder-steps cosine schedule")
    p.add_argument("--decoder-minutes", type=float, default=0.0, help="stop the decoder stage early")
    p.add_argument("--colours-steps", type=int, default=1000, help="--stage colours: VAE fine-tune steps")
    p.add_argument("--colours-batch", type=int, default=16)
    p.add_argument("--colours-lr", type=float, default=2e-4)
    p.add_argument("--unet-steps", type=int, default=4000)
    p.add_argument("--unet-batch", type=int, default=32)
    p.add_argument("--unet-lr", type=float, default=8e-4)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--decay-steps", type=int, default=0, help="cosine lr decay over the last N UNet steps")
    p.add_argument("--min-lr", type=float, default=0.1, help="lr at the end of the decay, as a fraction")
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--uncond", type=float, default=0.1, help="probability of an empty caption")
    p.add_argument("--tag-keep", type=float, default=0.8, help="probability of keeping each tag")
    p.add_argument("--short-captions", type=float, default=0.0, help="share of captions with few tags")
    p.add_argument("--short-keep", type=float, default=0.25, help="probability of keeping each tag in those")
    p.add_argument("--note", default="", help="free text stored with the hyper-parameters")
    p.add_argument("--export-raw", action="store_true", help="export the last weights, not the EMA")
    p.add_argument("--max-minutes", type=float, default=0.0, help="stop stages early (0: never)")
    p.add_argument("--vae-share", type=float, default=0.15, help="share of --max-minutes for the VAE")
    p.add_argument("--ckpt-every", type=int, default=250)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--work", type=Path, default=REPO / ".demo-train")
    p.add_argument("--out", type=Path, default=REPO / "src/emaki/data/demo/emaki-demo.safetensors")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    logfile = args.work / "train.log"
    hyper = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    log(f"train_demo {' '.join(sys.argv[1:])}\n{json.dumps(hyper)}", logfile)
    t0 = time.time()
    images = draw_dataset() if args.stage != "export" else torch.empty(0)
    if args.stage in ("all", "vae"):
        train_vae(args, images, args.work, logfile)
    if args.stage in ("all", "decoder"):
        train_decoder(args, images, args.work, logfile)
    if args.stage in ("all", "unet"):
        train_unet(args, images, args.work, logfile)
    if args.stage in ("all", "export", "unet"):
        export(args.work, args.out, logfile, hyper)
    if args.stage in ("all", "colours"):
        train_colours(args, images, args.work, logfile)
    log(f"done in {(time.time() - t0) / 60:.1f} min", logfile)


if __name__ == "__main__":
    main()
