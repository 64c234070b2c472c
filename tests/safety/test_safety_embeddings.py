"""Embeddings that smuggle words (issue 16, item 3): an embedding whose vectors are the text
encoder's own token vectors for refused words ("child nude"), under an innocent name, is refused
wherever it steers an image — the engine, the CLI, the job API, LoRA-bundled embeddings — and a
training run never saves one; innocent embeddings are untouched."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from engine_runner import ONE_THREAD, engine_for, runner_workspace
from fastapi.testclient import TestClient
from safetensors.torch import save_file
from tiny_lora import write_tiny_lora

from emaki.demo.datasets import write_concept_dataset
from emaki.devices import DevicePolicy
from emaki.engine import Engine
from emaki.errors import PolicyViolation
from emaki.models.components import SDComponents
from emaki.models.hashes import sha256_file
from emaki.models.resolve import demo_model_path
from emaki.networks import Embedding, save_embedding
from emaki.networks.embeddings import load_embedding
from emaki.params import GenerationParams
from emaki.safety import embeddings as embedding_policy
from emaki.safety.embeddings import (
    EmbeddingReadings,
    read_embedding,
    reads_refused,
    similarity_threshold,
)
from emaki.workspace import Workspace, default_home

FAST = {"steps": 2, "width": 32, "height": 32, "seed": 5}
SMUGGLED = "child nude"


def token_vectors(components: SDComponents, text: str) -> torch.Tensor:
    """The rows of the text encoder's token-embedding matrix for the tokens of `text`."""
    ids = components.tokenizer([text], add_special_tokens=False)["input_ids"][0]
    return components.text_encoder.get_input_embeddings().weight[ids].detach().clone()


def noisy(vectors: torch.Tensor, relative: float, seed: int = 0) -> torch.Tensor:
    """`vectors` plus random noise of `relative` times each vector's norm."""
    noise = torch.randn(vectors.shape, generator=torch.Generator().manual_seed(seed))
    return vectors + relative * vectors.norm(dim=1, keepdim=True) * torch.nn.functional.normalize(noise, dim=1)


def random_like_vocabulary(components: SDComponents, count: int, seed: int = 0) -> torch.Tensor:
    """Random vectors with the token matrix's mean and spread per dimension (an untrained embedding)."""
    matrix = components.text_encoder.get_input_embeddings().weight.detach()
    noise = torch.randn(count, matrix.shape[1], generator=torch.Generator().manual_seed(seed))
    return noise * matrix.std(0) + matrix.mean(0)


@pytest.fixture(scope="module")
def demo() -> SDComponents:
    return engine_for(runner_workspace()).load(str(demo_model_path())).components


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory, demo: SDComponents) -> Path:
    """An embeddings folder: smuggling aliases (exact, noisy, scaled copies of "child nude"),
    half of the words ("child"), and innocent ones (the words "red hair", random vectors)."""
    folder = tmp_path_factory.mktemp("embeddings")
    words = token_vectors(demo, SMUGGLED)
    save_file({"emb_params": words}, folder / "red_hair.safetensors")
    save_embedding(Embedding("noisy_hair", noisy(words, 0.3)), folder / "noisy_hair.pt")
    save_embedding(Embedding("big_hair", words * 4), folder / "big_hair.pt")
    save_embedding(Embedding("little", token_vectors(demo, "child")), folder / "little.pt")
    save_embedding(Embedding("innocent", token_vectors(demo, "red hair")), folder / "innocent.pt")
    save_embedding(Embedding("random_style", random_like_vocabulary(demo, 4)), folder / "random_style.pt")
    return folder


def generate(folder: Path, **fields: object):
    engine = engine_for(runner_workspace([folder]))
    return engine.generate(GenerationParams.create(**({"prompt": "1girl"} | FAST | fields)), save=False)


# --- the engine ---

@pytest.mark.parametrize("name", ["red_hair", "noisy_hair", "big_hair"])
def test_an_embedding_of_refused_words_is_refused_naming_its_file(folder, name):
    with pytest.raises(PolicyViolation) as refused:
        generate(folder, prompt=f"1girl, {name}, smile")
    message = str(refused.value)
    assert str(folder / name) in message and "encodes refused words" in message and SMUGGLED in message


def test_innocent_embeddings_are_used_and_an_alias_draws_what_its_words_draw(folder):
    alias = generate(folder, prompt="1girl, innocent")
    words = generate(folder, prompt="1girl, red hair")
    assert np.array_equal(np.asarray(alias.images[0].image), np.asarray(words.images[0].image))
    assert "innocent:" in alias.images[0].infotext  # TI hashes: it was used
    assert generate(folder, prompt="1girl, random_style, little").images


def test_the_words_an_embedding_encodes_are_judged_with_the_prompt(folder):
    with pytest.raises(PolicyViolation) as refused:
        generate(folder, prompt="1girl, little, nude")
    assert str(folder / "little") in str(refused.value) and '"child"' in str(refused.value)
    with pytest.raises(PolicyViolation):
        generate(folder, prompt="1girl, smile", hr_prompt="nude, little")  # every prompt field, hires off


def test_in_the_negative_prompt_it_steers_away_unless_cfg_is_below_1(folder):
    assert generate(folder, negative_prompt="red_hair, lowres").images
    with pytest.raises(PolicyViolation):
        generate(folder, negative_prompt="red_hair, lowres", cfg_scale=0.5)
    with pytest.raises(PolicyViolation):
        generate(folder, prompt="1girl, nude", negative_prompt="little", cfg_scale=0)


def test_an_embedding_bundled_in_a_lora_is_judged_too(tmp_path, demo):
    lora = write_tiny_lora(tmp_path / "loras" / "sparkles.safetensors",
                           embeddings={"sparkle": token_vectors(demo, SMUGGLED)})
    workspace = runner_workspace([tmp_path / "embeddings"]).with_folders("loras", [lora.parent])
    params = GenerationParams.create(prompt="1girl, sparkle <lora:sparkles:0.5>", **FAST)
    with pytest.raises(PolicyViolation) as refused:
        engine_for(workspace).generate(params, save=False)
    assert '"sparkle"' in str(refused.value) and str(lora) in str(refused.value)


def test_the_reading_is_remembered_per_engine_not_per_process(folder, monkeypatch):
    calls: list[int] = []
    real = embedding_policy.read_embedding

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(embedding_policy, "read_embedding", counted)
    engine = Engine(runner_workspace([folder]), ONE_THREAD)
    params = GenerationParams.create(prompt="1girl, innocent", **FAST)
    engine.generate(params, save=False)
    engine.generate(params.updated(seed=6), save=False)
    assert len(calls) == 1
    Engine(runner_workspace([folder]), ONE_THREAD).generate(params, save=False)
    assert len(calls) == 2


# --- the surfaces ---

def test_cli_refuses_with_exit_code_3_and_writes_nothing(folder, tmp_path, capsys):
    from emaki.cli import main

    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exited:
        main(["generate", "1girl, red_hair", "--embeddings-dir", str(folder), "--steps", "2", "--size", "32x32",
              "--out", str(out)])
    assert exited.value.code == 3 and not (out.exists() and list(out.iterdir()))
    err = capsys.readouterr().err
    assert "encodes refused words" in err and "red_hair" in err


def test_the_job_api_fails_the_job_with_the_reason(demo):
    folder = default_home(os.environ) / "embeddings"
    folder.mkdir(parents=True)
    save_file({"emb_params": token_vectors(demo, SMUGGLED)}, folder / "red_hair.safetensors")
    from emaki.server import ServerSettings, create_app

    with TestClient(create_app(ServerSettings())) as client:
        submitted = client.post("/api/jobs", json={"prompt": "1girl, red_hair", "steps": 2, "width": 64, "height": 64})
        assert submitted.status_code == 202
        deadline = time.monotonic() + 60
        while (job := client.get(f"/api/jobs/{submitted.json()['id']}").json())["status"] in ("queued", "running"):
            assert time.monotonic() < deadline
            time.sleep(0.05)
    assert job["status"] == "failed" and "encodes refused words" in job["error"] and job["images"] == []


def test_an_a1111_request_meeting_the_refusal_in_the_queue_gets_400_not_500(demo):
    folder = default_home(os.environ) / "embeddings"
    folder.mkdir(parents=True)
    save_file({"emb_params": token_vectors(demo, SMUGGLED)}, folder / "red_hair.safetensors")
    from emaki.server import ServerSettings, create_app

    with TestClient(create_app(ServerSettings())) as client:
        answer = client.post("/sdapi/v1/txt2img", json={"prompt": "1girl, red_hair", "steps": 2, "width": 64,
                                                        "height": 64})
    assert answer.status_code == 400 and "encodes refused words" in answer.json()["detail"]


# --- training ---

@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("cat_ears")
    write_concept_dataset(folder, "cat_ears", count=2)
    return folder


@pytest.mark.parametrize("save_every", [1, 0])
def test_training_never_saves_an_embedding_that_reads_as_refused_words(tmp_path, demo, data, save_every):
    engine = Engine(Workspace(tmp_path / "home"), DevicePolicy.choose("fp32", "cpu", threads=1))
    path = engine.workspace.home / "embeddings" / "red_hair.pt"
    path.parent.mkdir(parents=True)
    save_embedding(Embedding("red_hair", token_vectors(demo, SMUGGLED), step=0), path)
    before = sha256_file(path)
    with pytest.raises(PolicyViolation) as refused:
        engine.train_embedding("red_hair", data, 2, resume=True, learn_rate="1e-6", save_every=save_every,
                               preview_every=0, batch_size=1)
    assert "red_hair" in str(refused.value) and "encodes refused words" in str(refused.value)
    assert f"at step {1 if save_every else 2}" in str(refused.value)  # the first saved copy, or the end
    assert sha256_file(path) == before and not path.with_name("red_hair.pt.optim").exists()
    run_folder = engine.workspace.home / "training"  # the loop's own resume state aside
    saved = [p for p in run_folder.rglob("*") if p.suffix in (".pt", ".png") and p.parent.name != "state"]
    assert saved == []


def test_training_an_innocent_embedding_saves_it_and_trained_vectors_read_as_nothing(tmp_path, demo, data):
    engine = Engine(Workspace(tmp_path / "home"), DevicePolicy.choose("fp32", "cpu", threads=1))
    outcome = engine.train_embedding("hairdo", data, 1, init_text="red hair", save_every=1, preview_every=0,
                                     batch_size=1)
    assert outcome.path.exists() and outcome.step == 1
    trained = engine.train_embedding("style", data, 20, init_text="child", learn_rate="0.05", save_every=0,
                                     preview_every=0, batch_size=1)
    assert read(demo, load_embedding(trained.path).vectors).matches == ()  # trained away from any token


# --- the reading itself, on the demo model (width 128) and a random-init one (width 32) ---

@pytest.fixture(params=["demo", "tiny"])
def components(request, demo, tiny_components) -> SDComponents:
    return demo if request.param == "demo" else tiny_components


def read(components: SDComponents, vectors: torch.Tensor):
    matrix = components.text_encoder.get_input_embeddings().weight
    return read_embedding(vectors, matrix, components.tokenizer)


@pytest.mark.parametrize("copy", [lambda v: v, lambda v: noisy(v, 0.3), lambda v: v * 0.25, lambda v: v * 6,
                                  lambda v: noisy(v, 0.2) * 3],
                         ids=["exact", "noise", "smaller", "larger", "noisy-scaled"])
def test_copies_of_the_token_vectors_read_as_their_words(components, copy):
    reading = read(components, copy(token_vectors(components, SMUGGLED)))
    assert reading.text == SMUGGLED and reads_refused(reading)
    assert not reads_refused(read(components, copy(token_vectors(components, "red hair, smile"))))


@pytest.mark.parametrize(("words", "refused"), [("1girl, 24 years old, nude", False), ("1girl, 12 years old, nude", True),
                                                ("a g e 1 1, nude", True), ("1000 years old dragon girl, nsfw", False),
                                                ("k1dnaked", True), ("ｌｏｌｉ, ｎｕｄｅ", True)])
def test_digits_and_spelling_are_read_as_people_write_them(demo, words, refused):
    reading = read(demo, token_vectors(demo, words))
    assert reads_refused(reading) is refused


def test_random_vectors_read_as_nothing(components):
    reading = read(components, random_like_vocabulary(components, 1000, seed=1))
    assert reading.matches == () and reading.text == "" and not reads_refused(reading)


def test_glued_pieces_are_read_as_clip_reads_them(components):
    pieces = components.tokenizer(["childnude"], add_special_tokens=False)["input_ids"][0]
    assert len(pieces) == 2  # `child` + `nude</w>`: one word to the policy only when glued
    matrix = components.text_encoder.get_input_embeddings().weight
    reading = read(components, matrix[pieces].detach())
    assert reading.text == "childnude" and reads_refused(reading)


def test_the_threshold_stays_above_chance_for_the_width():
    assert similarity_threshold(768) == similarity_threshold(128) == 0.7
    assert 0.9 < similarity_threshold(32) < 0.95 and similarity_threshold(4) == 0.99


def test_the_cache_is_bounded_and_keyed_by_model(demo):
    readings = EmbeddingReadings(capacity=2)
    matrix = demo.text_encoder.get_input_embeddings().weight
    words = token_vectors(demo, SMUGGLED)
    first = readings.read(words, matrix, demo.tokenizer, model="a")
    assert readings.read(words.clone(), matrix, demo.tokenizer, model="a") is first
    assert readings.read(words, matrix, demo.tokenizer, model="b") is not first
    readings.read(words * 2, matrix, demo.tokenizer, model="a")
    assert len(readings) == 2
