"""The engine's promises: patches never outlive a run, infotext round-trips every field, the
network registry drives every listing, nothing below the surfaces reads the environment."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from emaki.engine import Cancel, Engine
from emaki.engine.networks import NETWORK_KINDS
from emaki.errors import Interrupted, ParamsError
from emaki.infotext_codec import ImageFacts, decode_infotext, encode_infotext
from emaki.networks import Hypernetwork, save_hypernetwork
from emaki.networks.hypernet_attention import HypernetworkAttnProcessor
from emaki.params import GenerationParams
from emaki.workspace import Workspace
from engine_runner import ONE_THREAD

SRC = Path(__file__).parents[2] / "src" / "emaki"


@pytest.fixture()
def hn_engine(tmp_path: Path) -> Engine:
    folder = tmp_path / "hypernetworks"
    save_hypernetwork(Hypernetwork.create("anime", (32, 64), activation_func="relu",
                                          generator=torch.Generator().manual_seed(0)), folder / "anime.pt")
    return Engine(Workspace(tmp_path).with_folders("hypernetworks", [folder]), ONE_THREAD)


def _state(engine: Engine, model: str) -> tuple[list[type], dict[str, torch.Tensor]]:
    unet = engine.load(model).components.unet
    return [type(p) for p in unet.attn_processors.values()], {k: v.clone() for k, v in unet.state_dict().items()}


def _params(model: Path, **fields: object) -> GenerationParams:
    return GenerationParams.create(**({"prompt": "1girl <hypernet:anime:1>", "model": str(model), "seed": 1,
                                       "steps": 3, "width": 32, "height": 32} | fields))


@pytest.mark.parametrize("how", ["interrupted", "failed"])
def test_a_run_that_ends_badly_leaves_the_cached_model_as_it_was(hn_engine, tiny_safetensors, how):
    processors, weights = _state(hn_engine, str(tiny_safetensors))
    cancel = Cancel()

    def on_progress(event: object) -> None:
        assert any(isinstance(p, HypernetworkAttnProcessor)  # patched while it runs
                   for p in hn_engine.load(str(tiny_safetensors)).components.unet.attn_processors.values())
        if how == "interrupted":
            cancel.interrupt.set()
        else:
            raise RuntimeError("a bug in a callback")

    with pytest.raises(Interrupted if how == "interrupted" else RuntimeError):
        hn_engine.generate(_params(tiny_safetensors), progress=on_progress, cancel=cancel, save=False)
    after_processors, after_weights = _state(hn_engine, str(tiny_safetensors))
    assert after_processors == processors
    assert all(torch.equal(weights[k], after_weights[k]) for k in weights)


def test_interrupt_keeps_the_images_finished_so_far(hn_engine, tiny_safetensors):
    cancel = Cancel()
    seen: list[int] = []

    def on_progress(event) -> None:  # noqa: ANN001
        seen.append(event.batch)
        if event.batch == 1:
            cancel.interrupt.set()

    with pytest.raises(Interrupted) as raised:
        hn_engine.generate(_params(tiny_safetensors, prompt="1girl", n_iter=3), progress=on_progress, cancel=cancel,
                           save=False)
    assert [image.seed for image in raised.value.result.images] == [1]  # type: ignore[attr-defined]


def test_a_tag_of_a_kind_emaki_lacks_is_an_error_not_dropped(hn_engine, tiny_safetensors):
    with pytest.raises(ParamsError, match="<foo:"):
        hn_engine.generate(_params(tiny_safetensors, prompt="1girl <foo:detail:0.5>"), save=False)


def test_every_network_kind_is_listed_and_named_by_the_registry():
    assert {kind.folder for kind in NETWORK_KINDS} >= {"embeddings", "hypernetworks"}
    assert len({kind.tag for kind in NETWORK_KINDS if kind.tag}) == len([k for k in NETWORK_KINDS if k.tag])


samplers = st.sampled_from(["Euler a", "Euler", "DPM++ 2M", "DDIM", "DPM++ SDE", "LMS"])
texts = st.text(st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\n\r\u2028\u2029\x85"),
                max_size=30).map(str.strip)


@st.composite
def run_params(draw: st.DrawFn) -> tuple[GenerationParams, ImageFacts]:
    strength = draw(st.sampled_from([0.0, 0.25, 1.0]))
    hires = draw(st.booleans())
    resized = hires and draw(st.booleans())
    hypernetwork = draw(st.sampled_from([None, "anime", "style_v2"]))
    fields = {
        "prompt": draw(texts.filter(lambda t: ":" not in t[:1])) or "1girl",
        "negative_prompt": draw(texts),
        "seed": draw(st.integers(0, 2**32 - 1)), "subseed": draw(st.integers(0, 2**32 - 1)) if strength else -1,
        "subseed_strength": strength,
        "seed_resize_from_w": 64 if strength else 0, "seed_resize_from_h": 96 if strength else 0,
        "sampler_name": draw(samplers), "scheduler": draw(st.sampled_from(["Automatic", "Karras"])),
        "steps": draw(st.integers(1, 150)), "cfg_scale": draw(st.sampled_from([1.0, 6.5, 7.0, 11.0])),
        "width": draw(st.sampled_from([64, 512, 768])), "height": draw(st.sampled_from([64, 512, 768])),
        "clip_skip": draw(st.integers(1, 12)), "eta_noise_seed_delta": draw(st.sampled_from([0, 31337])),
        "rng": draw(st.sampled_from(["CPU", "GPU", "NV"])),
        "emphasis": draw(st.sampled_from(["Original", "No norm", "Ignore", "None"])),
        "prompt_dialect": draw(st.sampled_from(["a1111", "novelai"])),
        "model": "anything-v3", "vae": draw(st.sampled_from([None, "kl-f8-anime.vae.pt"])),
        "hypernetwork": hypernetwork,
        "hypernetwork_strength": draw(st.sampled_from([0.5, 1.0])) if hypernetwork else 1.0,
        "eta": draw(st.sampled_from([None, 0.5])),
        "denoising_strength": draw(st.sampled_from([0.3, 0.75])) if hires else 0.75,
        "enable_hr": hires,
        "hr_scale": 2.0 if resized or not hires else draw(st.sampled_from([1.5, 2.0])),
        "hr_resize_x": 1024 if resized else 0, "hr_resize_y": 1536 if resized else 0,
        "hr_upscaler": draw(st.sampled_from(["Latent", "Lanczos"])) if hires else "Latent",
        "hr_second_pass_steps": draw(st.integers(0, 30)) if hires else 0,
        "hr_sampler_name": draw(st.sampled_from([None, "Euler"])) if hires else None,
        "hr_prompt": draw(texts) if hires else "", "hr_negative_prompt": draw(texts) if hires else "",
    }
    params = GenerationParams.create(**fields)
    eta = ("Eta DDIM", 0.5) if params.eta and params.sampler_name == "DDIM" else None
    facts = ImageFacts(params.seed, params.subseed, "anything-v3", "0123456789",
                       params.vae, "abcdef0123" if params.vae else None, eta=eta,
                       networks={"Hypernet hash": "ffeeddccbb"} if hypernetwork else {}, version="emaki 0.1.0")
    return params.updated(eta=eta[1] if eta else None), facts


@settings(max_examples=300, deadline=None)
@given(run_params())
def test_infotext_round_trip_gives_back_every_recorded_field(case: tuple[GenerationParams, ImageFacts]) -> None:
    params, facts = case
    back = decode_infotext(encode_infotext(params, facts))
    # Not recorded by the format: how many images, and img2img's input.
    skip = {"batch_size", "n_iter", "init_image", "resize_mode", "s_noise"}
    assert back.model_dump(exclude=skip) == params.model_dump(exclude=skip)


def test_nothing_below_the_surfaces_reads_the_environment():
    # jobs/ray_executor.py: its actor is a Ray worker process's entry point, reading that worker's workspace.
    surfaces = ("cli/", "server/", "__init__.py", "__main__.py", "jobs/ray_executor.py")
    readers = []
    for path in SRC.rglob("*.py"):
        relative = path.relative_to(SRC).as_posix()
        if relative.startswith(surfaces):
            continue
        if re.search(r"os\.environ|os\.getenv|getenv\(", path.read_text(encoding="utf-8")):
            readers.append(relative)
    assert readers == []


def test_engines_share_nothing(tiny_safetensors, tmp_path):
    first, second = Engine(Workspace(tmp_path / "a"), ONE_THREAD), Engine(Workspace(tmp_path / "b"), ONE_THREAD)
    assert first.load(str(tiny_safetensors)) is not second.load(str(tiny_safetensors))
    assert first.networks is not second.networks


def test_one_generation_at_a_time_per_engine(tiny_safetensors, tmp_path):
    engine = Engine(Workspace(tmp_path), ONE_THREAD)
    params = _params(tiny_safetensors, prompt="1girl")
    results = []
    threads = [threading.Thread(target=lambda: results.append(engine.generate(params, save=False)))
               for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [r.images[0].image.tobytes() for r in results][0] == results[1].images[0].image.tobytes()


def test_a_failing_batch_keeps_the_images_already_written(hn_engine, tiny_safetensors, tmp_path):
    from emaki.errors import EmakiError

    def on_progress(event) -> None:  # noqa: ANN001
        if event.batch == 1:
            raise EmakiError("the second batch failed")

    with pytest.raises(EmakiError) as raised:
        hn_engine.generate(_params(tiny_safetensors, prompt="1girl", n_iter=2), progress=on_progress,
                           out_dir=tmp_path)
    kept = raised.value.result.images  # type: ignore[attr-defined]
    assert [image.path for image in kept] == sorted(tmp_path.glob("*.png"))


def test_a_vae_is_found_by_name_wherever_emaki_models_lists_it(tmp_path):
    from emaki.engine import resolve_vae
    from emaki.engine.inventory import take_inventory

    folder = tmp_path / "models" / "VAE" / "anime"
    folder.mkdir(parents=True)
    (folder / "kl-f8-anime.vae.pt").write_bytes(b"vae bytes")
    workspace = Workspace(tmp_path)
    [row] = take_inventory(workspace, text_width=32, hashes=False).vaes
    assert resolve_vae(row["name"], workspace) == row["path"]
    assert resolve_vae("kl-f8-anime.vae", workspace) == row["path"]
    with pytest.raises(Exception, match="no such VAE"):
        resolve_vae("missing", workspace)
