"""emaki's streaming merger vs a naive A1111-style merge, on SD 1.5-size checkpoints.

Builds (once, cached in --folder) three fp16 checkpoints with random weights in the real SD 1.5
single-file key layout (~2.13 GB each), then runs each variant in its own subprocess so its peak
RSS (max resident set, including the interpreter and torch) is its own:

* naive weighted sum: load both with safetensors, `(1-α)·A + α·B` in fp32 per tensor, save fp16
* emaki weighted sum (`emaki.merge.merge`), with the inputs' hashes cached and cold
* naive / emaki add difference `A + α·(B - C)` of three models
* emaki lineage of the weighted-sum result against the three inputs
* emaki bake: a random SD 1.5-size kohya LoRA (rank 32, UNet + text encoder; `--locon` adds the
  ResNet convolutions) baked into A as fp16 (`merge --lora`), checked against W + ΔW computed
  whole for a sample of layers; with `--extract`, the LoRA extracted back from the result
  (`emaki lora extract`, on the CPU) with its relative errors

and checks that emaki's outputs equal the naive ones bit for bit. Times are wall seconds with
warm page cache (the files were just written or read).

    python benchmarks/merge.py [--folder /tmp/emaki-merge-bench] [--skip-naive] [--keep]
    python benchmarks/merge.py --only bake [--lora-rank 32] [--locon] [--extract]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ALPHA = 0.3


def sd15_layout() -> dict[str, tuple[int, ...]]:
    """{key: shape} of a real SD 1.5 single file (pruned, no EMA), from a shape-only model."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from emaki.models.configs import sd15_config
    from emaki.models.convert import components_to_ldm

    c = sd15_config()
    with init_empty_weights():
        unet, vae = UNet2DConditionModel(**c.unet), AutoencoderKL(**c.vae)
        text = CLIPTextModel(CLIPTextConfig(**c.text_encoder))
    shapes = {
        k: tuple(v.shape) for k, v in components_to_ldm(unet, vae, text, c.unet, c.vae).items()
    }
    shapes["cond_stage_model.transformer.text_model.embeddings.position_ids"] = (1, 77)
    shapes["alphas_cumprod"] = (1000,)
    return shapes


def to_ckpt(source: Path, path: Path) -> None:
    """The same weights as an original-style `.ckpt` (torch zip, `state_dict` wrapper)."""
    import torch
    from safetensors.torch import load_file

    torch.save({"state_dict": load_file(source), "global_step": 1}, path)


def build(path: Path, seed: int) -> None:
    """Write a random fp16 checkpoint in the SD 1.5 layout, streaming (bounded memory)."""
    import torch

    from emaki.merge.sources import TensorInfo
    from emaki.merge.writer import SafetensorsWriter

    torch.set_num_threads(2)
    shapes = sd15_layout()
    entries = []
    for key, shape in shapes.items():
        dtype = (
            torch.int64
            if key.endswith("position_ids")
            else torch.float32
            if key == "alphas_cumprod"
            else torch.float16
        )
        entries.append((key, TensorInfo(dtype, shape)))
    entries.sort(key=lambda e: -e[1].dtype.itemsize)
    g = torch.Generator().manual_seed(seed)
    chunk = 1 << 22
    with SafetensorsWriter(path, entries, {"format": "pt"}) as w:
        for key, info in entries:
            if info.dtype == torch.int64:
                w.write(torch.arange(77, dtype=torch.int64))
            elif info.dtype == torch.float32:
                w.write(torch.linspace(0.999, 0.005, 1000))
            else:
                for start in range(0, info.numel, chunk):
                    n = min(chunk, info.numel - start)
                    w.write((torch.randn(n, generator=g) * 0.05).half())
        w.commit()


# ---- variants (each runs in a child process) -------------------------------------------------
def naive(paths: list[str], out: str, mode: str) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    torch.set_num_threads(2)
    models = [load_file(p) for p in paths]
    a = models[0]
    for key in list(a):
        if "model" not in key or key.endswith("position_ids") or not a[key].is_floating_point():
            continue
        if mode == "weighted-sum":
            a[key] = ((1 - ALPHA) * a[key].float() + ALPHA * models[1][key].float()).half()
        else:
            a[key] = (
                a[key].float() + ALPHA * (models[1][key].float() - models[2][key].float())
            ).half()
    save_file(a, out, metadata={"format": "pt"})


def emaki(paths: list[str], out: str, mode: str, cache: str | None) -> None:
    import torch

    from emaki.merge import InputRef, MergeRecipe, merge
    from emaki.models.hashes import HashCache

    torch.set_num_threads(2)
    refs = [InputRef(p) for p in paths]
    recipe = MergeRecipe(mode, *refs, alpha=ALPHA, dtype="fp16")  # type: ignore[arg-type]
    merge(recipe, out, hashes=HashCache(cache), overwrite=True)


def lineage(model: str, candidates: list[str]) -> None:
    import torch

    from emaki.merge import trace_lineage

    torch.set_num_threads(2)
    result = trace_lineage(model, candidates)
    worst = max(fit.residual for fit in result.blocks.values())
    lora = [line for line in result.summary() if "LoRA" in line]
    print("LINEAGE", json.dumps({"first": result.summary()[:2], "worst_residual": worst,
                                 "lora": lora}))


def build_lora(path: Path, rank: int, locon: bool) -> None:
    """A random kohya LoRA for SD 1.5 (fp16): ΔW entries of about 1e-3, alpha = rank / 2."""
    import torch
    from safetensors.torch import save_file

    from emaki.networks.lora.extract import CheckpointNames, kohya_modules

    shapes = sd15_layout()
    g = torch.Generator().manual_seed(7)
    tensors = {}
    for module in kohya_modules(CheckpointNames(shapes), shapes, convolutions=locon):
        out, inp, *kernel = shapes[module.weight_key]
        down = torch.randn(rank, inp, *kernel, generator=g) * (2e-3 / rank**0.5)
        up = torch.randn(out, rank, *([1, 1] if kernel else []), generator=g)
        tensors[f"{module.kohya_name}.lora_down.weight"] = down.half()
        tensors[f"{module.kohya_name}.lora_up.weight"] = up.half()
        tensors[f"{module.kohya_name}.alpha"] = torch.tensor(rank / 2)
    save_file(tensors, str(path), metadata={"ss_network_dim": str(rank), "ss_base_model_version": "sd_v1"})


def bake(model: str, lora: str, out: str) -> None:
    import torch

    from emaki.merge import InputRef, MergeRecipe, merge
    from emaki.merge.recipe import LoraRef

    torch.set_num_threads(2)
    recipe = MergeRecipe(
        "no-interpolation", InputRef(model), dtype="fp16", loras=(LoraRef(lora, 0.8, 0.8),)
    )
    merge(recipe, out, overwrite=True)


def check_bake(model: str, lora: str, out: str, samples: int = 24) -> None:
    """A sample of baked tensors against W + 0.8·ΔW computed whole (within fp16 rounding)."""
    import torch
    from safetensors import safe_open

    from emaki.networks.lora import load_lora
    from emaki.networks.lora.extract import CheckpointNames

    network = load_lora(lora)
    with safe_open(model, "pt") as fa, safe_open(out, "pt") as fo:
        names = CheckpointNames(list(fa.keys()))
        modules = sorted(network.modules.items())
        step = max(1, len(modules) // samples)
        worst = 0.0
        for name, module in modules[::step]:
            key = names.find(name).weight_key  # type: ignore[union-attr]
            weight = fa.get_tensor(key).float()
            delta, _ = module.delta(weight, 0.8)
            exact = weight + delta
            got = fo.get_tensor(key)
            ulp = (torch.nextafter(got.abs(), torch.tensor(float("inf"), dtype=got.dtype)) - got.abs()).float()
            worst = max(worst, float(((got.float() - exact).abs() / ulp).max()))
        print("SAME", json.dumps(worst <= 1.0))


def extract(tuned: str, base: str, out: str, rank: int) -> None:
    from emaki.merge import open_source
    from emaki.merge.blocks import block_of
    from emaki.networks.lora.extract import extract_lora, save_extracted_lora

    # min diff 0: the random LoRA's text-encoder changes (|ΔW| < 0.01) are kept, to measure them
    result = extract_lora(open_source(tuned), open_source(base), rank=rank, threads=2,
                          min_text_encoder_diff=0.0)
    save_extracted_lora(result, out, overwrite=True)
    errors = result.relative_errors(block_of)
    print("EXTRACT", json.dumps({"layers": len(result.layers), "all": result.relative_error,
                                 "worst_block": max(errors.items(), key=lambda kv: kv[1])}))


def recovery(model: str, truth: str, extracted: str) -> None:
    """‖ΔW_extracted − 0.8·ΔW_truth‖ / ‖0.8·ΔW_truth‖ per layer of the baked LoRA."""
    from safetensors import safe_open

    from emaki.networks.lora import load_lora
    from emaki.networks.lora.extract import CheckpointNames

    original, got = load_lora(truth), load_lora(extracted)
    errors = []
    with safe_open(model, "pt") as f:
        names = CheckpointNames(list(f.keys()))
        for name, module in original.modules.items():
            weight = f.get_tensor(names.find(name).weight_key).float()  # type: ignore[union-attr]
            want, _ = module.delta(weight, 0.8)
            have, _ = got.modules[name].delta(weight, 1.0)
            errors.append(float((have - want).norm() / want.norm()))
    errors.sort()
    print("RECOVERY", json.dumps({"median": errors[len(errors) // 2], "max": errors[-1],
                                  "layers": len(errors)}))


def settle(paths: list[Path]) -> None:
    """The same start for every variant: dirty pages written back, inputs in the page cache."""
    os.sync()
    for path in paths:
        with open(path, "rb", buffering=0) as f:
            while f.read(1 << 24):
                pass


def peak_rss_mb() -> float:
    """This process's peak resident memory. VmHWM, not ru_maxrss: after fork + exec, Linux's
    ru_maxrss still counts the parent's resident memory at the time of the fork."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(args: list[str], warm: list[Path] | None = None) -> dict:
    """Run `python benchmarks/merge.py --child ...` and return its time and peak RSS."""
    settle(warm or [])
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, __file__, "--child", *args], capture_output=True, text=True, check=False
    )
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"child {args} failed:\n{proc.stderr}")
    stats = json.loads(proc.stdout.strip().splitlines()[-1])
    stats["wall"] = seconds
    for line in proc.stdout.splitlines():
        if line.startswith("LINEAGE "):
            stats["lineage"] = json.loads(line[len("LINEAGE ") :])
        if line.startswith("SAME "):
            stats["same"] = json.loads(line[len("SAME ") :])
        if line.startswith("EXTRACT "):
            stats["extract"] = json.loads(line[len("EXTRACT ") :])
        if line.startswith("RECOVERY "):
            stats["recovery"] = json.loads(line[len("RECOVERY ") :])
    return stats


def same_tensors(x: str, y: str) -> bool:
    import torch
    from safetensors import safe_open

    with safe_open(x, "pt") as fx, safe_open(y, "pt") as fy:
        if set(fx.keys()) != set(fy.keys()):
            return False
        return all(torch.equal(fx.get_tensor(k), fy.get_tensor(k)) for k in fx.keys())  # noqa: SIM118 (not a dict)


def bake_rows(folder: Path, model: Path, args: argparse.Namespace) -> None:
    """Bake a random SD 1.5 LoRA into `model`; print time, peak RSS and the checks."""
    kind = "locon" if args.locon else "lora"
    lora = folder / f"{kind}-r{args.lora_rank}.safetensors"
    if not lora.exists():
        child(["build-lora", str(lora), str(args.lora_rank), kind])
    out = folder / "baked-lora.safetensors"
    stats = child(["bake", str(model), str(lora), str(out)], [model, lora])
    same = child(["check-bake", str(model), str(lora), str(out)])["same"]
    lin = child(["lineage", str(out), str(model)], [out, model])
    mb = lora.stat().st_size / 1e6
    print(
        f"bake a rank-{args.lora_rank} {kind.upper() if args.locon else 'LoRA'} ({mb:.0f} MB) into "
        f"{model.name} as fp16: {stats['wall']:.1f} s, {stats['rss_mb']:.0f} MB peak "
        f"(target < 400 MB: {'met' if stats['rss_mb'] < 400 else 'MISSED'}); "
        f"sampled layers = W + ΔW within fp16 rounding: {same}"
    )
    print(
        f"lineage of the baked model vs {model.name}: {lin['wall']:.1f} s, "
        f"{lin['rss_mb']:.0f} MB peak; {lin['lineage']['lora'] or 'no LoRA seen'}"
    )
    if args.extract:
        extracted = folder / "extracted.safetensors"
        ex = child(["extract", str(out), str(model), str(extracted), str(args.lora_rank)], [out, model])
        info = ex["extract"]
        back = child(["recovery", str(model), str(lora), str(extracted)])["recovery"]
        print(
            f"extract rank {args.lora_rank} back (CPU, 2 threads): {ex['wall']:.1f} s, "
            f"{ex['rss_mb']:.0f} MB peak, {info['layers']} layers; ‖ΔW − ΔW_r‖/‖ΔW‖ of baked − base "
            f"(fp16 rounding included) {info['all'] * 100:.3f}% overall, worst block "
            f"{info['worst_block'][0]} {info['worst_block'][1] * 100:.3f}%; the extracted LoRA vs the "
            f"baked one, per layer: median {back['median'] * 100:.3f}%, max {back['max'] * 100:.3f}%"
        )
        if not args.keep:
            extracted.unlink(missing_ok=True)
    if not args.keep:
        out.unlink(missing_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--folder", type=Path, default=Path("/tmp/emaki-merge-bench"))
    parser.add_argument("--skip-naive", action="store_true")
    parser.add_argument("--skip-lineage", action="store_true")
    parser.add_argument(
        "--lineage-candidates",
        type=int,
        default=3,
        help="screen this many candidates (beyond 3: hard links to a, b, c under other names, "
        "so the extra files share the page cache: this measures the arithmetic, not the disk)",
    )
    parser.add_argument("--only", choices=["weighted-sum", "add-difference", "bake"], default=None)
    parser.add_argument("--lora-rank", type=int, default=32, help="rank of the baked LoRA")
    parser.add_argument("--locon", action="store_true", help="the LoRA covers the ResNet convs too")
    parser.add_argument("--extract", action="store_true", help="extract the LoRA back (slow)")
    parser.add_argument("--skip-bake", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the outputs")
    parser.add_argument(
        "--ckpt", action="store_true", help="also merge with A as a .ckpt (written once, 2 GB)"
    )
    parser.add_argument("--child", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        start = time.perf_counter()
        if kind == "build":
            build(Path(rest[0]), int(rest[1]))
        elif kind == "naive":
            naive(rest[2:], rest[1], rest[0])
        elif kind == "emaki":
            emaki(rest[3:], rest[1], rest[0], None if rest[2] == "-" else rest[2])
        elif kind == "lineage":
            lineage(rest[0], rest[1:])
        elif kind == "ckpt":
            to_ckpt(Path(rest[0]), Path(rest[1]))
        elif kind == "compare":
            print("SAME", json.dumps(same_tensors(rest[0], rest[1])))
        elif kind == "build-lora":
            build_lora(Path(rest[0]), int(rest[1]), rest[2] == "locon")
        elif kind == "bake":
            bake(rest[0], rest[1], rest[2])
        elif kind == "check-bake":
            check_bake(rest[0], rest[1], rest[2])
        elif kind == "extract":
            extract(rest[0], rest[1], rest[2], int(rest[3]))
        elif kind == "recovery":
            recovery(rest[0], rest[1], rest[2])
        print(json.dumps({"seconds": time.perf_counter() - start, "rss_mb": peak_rss_mb()}))
        return

    folder: Path = args.folder
    folder.mkdir(parents=True, exist_ok=True)
    inputs = [folder / f"{name}.safetensors" for name in ("a", "b", "c")]
    for seed, path in enumerate(inputs, start=1):
        if not path.exists() and (args.only != "bake" or seed == 1):
            stats = child(["build", str(path), str(seed)])
            gb = path.stat().st_size / 1e9
            print(
                f"built {path.name}: {gb:.2f} GB in {stats['wall']:.1f} s, {stats['rss_mb']:.0f} MB"
            )
    size = inputs[0].stat().st_size
    print(
        f"inputs: {size / 1e9:.2f} GB each ({size / 2**30:.2f} GiB); machine: {os.cpu_count()} CPUs"
    )
    if args.only == "bake":
        bake_rows(folder, inputs[0], args)
        return
    cache = str(folder / "hashes.json")
    child(
        ["emaki", "weighted-sum", str(folder / "warm.safetensors"), cache, *map(str, inputs[:2])]
    )  # fill the cache
    child(["emaki", "add-difference", str(folder / "warm.safetensors"), cache, *map(str, inputs)])
    (folder / "warm.safetensors").unlink()
    if args.only is None and not args.skip_bake:
        bake_rows(folder, inputs[0], args)
    rows = []
    modes = [args.only] if args.only else ["weighted-sum", "add-difference"]
    for mode in modes:
        used = list(map(str, inputs[:2] if mode == "weighted-sum" else inputs))
        out_naive, out_emaki = (
            str(folder / f"naive-{mode}.safetensors"),
            str(folder / f"emaki-{mode}.safetensors"),
        )
        files = [Path(p) for p in used]
        naive_stats = None if args.skip_naive else child(["naive", mode, out_naive, *used], files)
        warm = child(["emaki", mode, out_emaki, cache, *used], files)
        cold = child(["emaki", mode, str(folder / "cold.safetensors"), "-", *used], files)
        equal = None if naive_stats is None else child(["compare", out_naive, out_emaki])["same"]
        rows.append((mode, naive_stats, warm, cold, equal))
        if mode == "weighted-sum" and not args.skip_lineage:
            candidates = list(inputs)
            for i in range(3, args.lineage_candidates):
                link = folder / f"link{i}.safetensors"
                if not link.exists():
                    os.link(inputs[i % 3], link)
                candidates.append(link)
            candidates = candidates[: args.lineage_candidates]
            lin = child(["lineage", out_emaki, *map(str, candidates)], [Path(out_emaki), *inputs])
            print(
                f"lineage of the weighted sum vs {len(candidates)} candidates: "
                f"{lin['wall']:.1f} s, {lin['rss_mb']:.0f} MB peak; "
                f"{lin['lineage']['first']} worst residual {lin['lineage']['worst_residual']:.2e}"
            )
    if args.ckpt:
        ckpt = folder / "a.ckpt"
        if not ckpt.exists():
            child(["ckpt", str(inputs[0]), str(ckpt)])
        out = str(folder / "ckpt-mix.safetensors")
        stats = child(
            ["emaki", "weighted-sum", out, cache, str(ckpt), str(inputs[1])], [ckpt, inputs[1]]
        )
        same = child(["compare", out, str(folder / "emaki-weighted-sum.safetensors")])["same"]
        print(
            f"weighted sum with A as a .ckpt: {stats['wall']:.1f} s, "
            f"{stats['rss_mb']:.0f} MB peak; "
            f"same tensors as from the .safetensors: {same}"
        )
    print(f"\n{'mode':16} {'variant':28} {'seconds':>8} {'peak RSS':>10}")

    def row(mode: str, label: str, stats: dict) -> None:
        print(f"{mode:16} {label:28} {stats['wall']:8.1f} {stats['rss_mb']:8.0f} MB")

    for mode, naive_stats, warm, cold, equal in rows:
        if naive_stats:
            row(mode, "naive (load all, fp32, save)", naive_stats)
        row(mode, "emaki (hashes cached)", warm)
        row(mode, "emaki (hashing inputs too)", cold)
        if naive_stats:
            ratio, ratio_cold = (
                warm["wall"] / naive_stats["wall"],
                cold["wall"] / naive_stats["wall"],
            )
            ok = ratio <= 0.5 and warm["rss_mb"] < 400
            print(
                f"{'':16} emaki/naive time {ratio:.2f} (cached), {ratio_cold:.2f} (hashing); "
                f"bit-identical: {equal}; target (<= 0.5x, < 400 MB): {'met' if ok else 'MISSED'}"
            )
    if not args.keep:
        for path in folder.glob("*-*.safetensors"):
            path.unlink()
        (folder / "cold.safetensors").unlink(missing_ok=True)
    print(f"\n(input files kept in {folder}; peak RSS = VmHWM of each child process)")


if __name__ == "__main__":
    main()
