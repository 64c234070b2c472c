"""Training embeddings and hypernetworks on the demo model, end to end: files A1111 reads, resume,
cancel, roll-back, previews that cannot crash a run, the policy, the CLI."""

from __future__ import annotations

import csv
import math
import threading
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from emaki.cli import main
from emaki.demo.datasets import write_concept_dataset
from emaki.devices import DevicePolicy
from emaki.engine import Engine
from emaki.errors import ParamsError, PolicyViolation
from emaki.models.hashes import sha256_file
from emaki.models.safe_load import load_pickle
from emaki.networks.embeddings import load_embedding
from emaki.networks.hypernetworks import load_hypernetwork
from emaki.params import GenerationParams
from emaki.training import trainer
from emaki.training.create import attention_widths, init_vectors
from emaki.training.params import TrainingParams
from emaki.training.report import TrainingUpdate
from emaki.workspace import Workspace

QUICK = {"preview_every": 0, "save_every": 0}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("cat_ears")
    write_concept_dataset(folder, "cat_ears", count=4)
    return folder


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    return Engine(Workspace(tmp_path / "home"), DevicePolicy.choose("fp32", "cpu", threads=1))


def test_an_embedding_trains_into_a_file_a1111_reads(engine: Engine, data: Path) -> None:
    updates: list[TrainingUpdate] = []
    outcome = engine.train_embedding("nekomimi", data, 4, init_text="animal ears", num_vectors_per_token=2,
                                     save_every=2, preview_every=2, progress=updates.append)
    path = engine.workspace.home / "embeddings" / "nekomimi.pt"
    assert outcome.path == path and outcome.step == 4 and not outcome.cancelled
    assert [u.step for u in updates] == [1, 2, 3, 4] and all(math.isfinite(u.loss) for u in updates)
    raw = load_pickle(path)
    assert set(raw) >= {"string_to_token", "string_to_param", "name", "step", "sd_checkpoint", "sd_checkpoint_name"}
    assert raw["step"] == 4 and raw["name"] == "nekomimi" and raw["sd_checkpoint_name"] == "emaki-demo"
    embedding = load_embedding(path)
    assert embedding.num_vectors == 2 and torch.isfinite(embedding.vectors).all()
    record = embedding.provenance
    assert record is not None and record["dataset_size"] == 4 and record["step"] == 4
    assert record["base_model"] == "emaki-demo" and len(record["dataset_sha256"]) == 64
    optim = load_pickle(path.with_name("nekomimi.pt.optim"))
    assert optim["hash"] == embedding.checksum() and "state" in optim["optimizer_state_dict"]
    # the run folder: a save at step 2, previews at 2 and 4, the loss log, the plot, the card
    log = outcome.log_directory
    assert [p.name for p in outcome.saves] == ["nekomimi-2.pt"] and load_embedding(outcome.saves[0]).step == 2
    assert [p.name for p in outcome.previews] == ["nekomimi-2.png", "nekomimi-4.png"]
    with outcome.loss_csv.open() as f:
        rows = list(csv.DictReader(f))
    assert [r["step"] for r in rows] == ["1", "2", "3", "4"] and list(rows[0]) == [
        "step", "epoch", "epoch_step", "loss", "learn_rate"]
    assert [r["epoch"] for r in rows] == ["0", "0", "0", "1"] and float(rows[0]["learn_rate"]) == 0.005
    assert outcome.loss_plot is not None and Image.open(outcome.loss_plot).size == (640, 360)
    card = load_embedding(log / "image_embeddings" / "nekomimi-4.png")
    assert torch.equal(card.vectors, embedding.vectors)


def test_a_trained_embedding_is_used_by_name(engine: Engine, data: Path) -> None:
    engine.train_embedding("nekomimi", data, 2, **QUICK)
    result = engine.generate(GenerationParams.create(prompt="1girl, nekomimi", steps=2, seed=1), save=False)
    shorthash = load_embedding(engine.workspace.home / "embeddings" / "nekomimi.pt").shorthash
    assert f"TI hashes: \"nekomimi: {shorthash}\"" in result.images[0].infotext


def test_init_vectors_copy_init_tokens_as_a1111(engine: Engine) -> None:
    parts = engine.load(None).components
    table = parts.text_encoder.get_input_embeddings().weight
    ids = parts.tokenizer(["animal ears"], add_special_tokens=False)["input_ids"][0]
    assert len(ids) == 2
    three = init_vectors(parts.text_encoder, parts.tokenizer, "animal ears", 3)
    assert torch.equal(three, table[[ids[0], ids[0], ids[1]]].detach())  # vector i = token i·len/n
    one = init_vectors(parts.text_encoder, parts.tokenizer, "animal ears", 1)
    assert torch.equal(one, table[[ids[0]]].detach())  # the text is cut to the vector count
    assert not init_vectors(parts.text_encoder, parts.tokenizer, "", 2).any()


def test_existing_names_need_overwrite_or_resume(engine: Engine, data: Path) -> None:
    engine.create_embedding("neko")
    with pytest.raises(ParamsError, match=r"neko\.pt: already exists; --overwrite replaces it, --resume"):
        engine.train_embedding("neko", data, 2, **QUICK)
    with pytest.raises(ParamsError, match="already exists"):
        engine.create_embedding("neko")
    assert engine.train_embedding("neko", data, 2, overwrite=True, **QUICK).step == 2
    with pytest.raises(ParamsError, match="already trained to step 2; ask for more steps"):
        engine.train_embedding("neko", data, 2, resume=True, **QUICK)
    with pytest.raises(ParamsError, match="nothing to resume"):
        engine.train_embedding("other", data, 2, resume=True, **QUICK)


def test_an_init_text_the_policy_refuses_creates_nothing(engine: Engine) -> None:
    from emaki.errors import PolicyViolation

    with pytest.raises(PolicyViolation):
        engine.create_embedding("red_hair", init_text="child, nude")
    assert not list((engine.workspace.home / "embeddings").glob("red_hair*"))


def test_cancel_saves_and_resume_gives_the_uninterrupted_result(engine: Engine, data: Path) -> None:
    straight = engine.train_embedding("straight", data, 6, **QUICK)
    cancel = threading.Event()

    def stop_at_3(update: TrainingUpdate) -> None:
        if update.step == 3:
            cancel.set()

    first = engine.train_embedding("resumed", data, 6, progress=stop_at_3, cancel=cancel, **QUICK)
    assert first.cancelled and first.step == 3 and load_embedding(first.path).step == 3
    second = engine.train_embedding("resumed", data, 6, resume=True, **QUICK)
    assert second.step == 6 and not second.cancelled
    assert torch.equal(load_embedding(second.path).vectors, load_embedding(straight.path).vectors)
    with second.loss_csv.open() as f:
        assert [r["step"] for r in csv.DictReader(f)] == ["1", "2", "3", "4", "5", "6"]


def test_an_a1111_made_embedding_resumes_with_its_optimizer_state(engine: Engine, data: Path) -> None:
    folder = engine.workspace.home / "embeddings"
    folder.mkdir(parents=True)
    vectors = torch.randn(2, 128) * 0.2
    torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": vectors}, "name": "made", "step": 10,
                "sd_checkpoint": "0123456789", "sd_checkpoint_name": "someone-else"}, folder / "made.pt")
    param = torch.nn.Parameter(vectors.clone())
    optimizer = torch.optim.AdamW([param], lr=0.005, weight_decay=0.0)
    param.grad = torch.ones_like(param)
    optimizer.step()
    checksum = load_embedding(folder / "made.pt").checksum()
    torch.save({"hash": checksum, "optimizer_state_dict": optimizer.state_dict()}, folder / "made.pt.optim")
    outcome = engine.train_embedding("made", data, 12, resume=True, **QUICK)
    assert outcome.step == 12 and load_embedding(outcome.path).step == 12
    saved = load_pickle(folder / "made.pt.optim")["optimizer_state_dict"]
    assert int(saved["state"][0]["step"]) == 3  # the A1111 optimizer's step, then two more

    torch.save({"hash": "ffff", "optimizer_state_dict": optimizer.state_dict()}, folder / "made.pt.optim")
    with pytest.raises(ParamsError, match=r"made\.pt\.optim: its hash 'ffff' does not match made\.pt"):
        engine.train_embedding("made", data, 14, resume=True, **QUICK)


def test_non_finite_losses_roll_back_and_are_reported(engine: Engine, data: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = trainer.DiffusionObjective.loss

    def sometimes_nan(self: Any, *args: Any) -> torch.Tensor:
        calls.append(1)
        value = real(self, *args)
        return value * math.nan if len(calls) == 2 else value

    monkeypatch.setattr(trainer.DiffusionObjective, "loss", sometimes_nan)
    updates: list[TrainingUpdate] = []
    outcome = engine.train_embedding("nan", data, 3, progress=updates.append, **QUICK)
    assert outcome.step == 3 and outcome.rollbacks == 1 and len(calls) == 4
    assert "step 2: the loss or its gradient was not finite at learning rate 0.005" in outcome.messages[0]
    assert [u.message is not None for u in updates] == [False, True, False, False]
    assert updates[-1].learn_rate == 0.0025
    assert torch.isfinite(load_embedding(outcome.path).vectors).all()


def test_a_failing_preview_never_ends_the_run(engine: Engine, data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("out of memory")

    monkeypatch.setattr(trainer, "run_generation", broken)
    outcome = engine.train_embedding("preview", data, 2, preview_every=1, save_every=0)
    assert outcome.step == 2 and outcome.previews == []
    assert outcome.messages == [f"step {n}: the preview failed (RuntimeError: out of memory); training goes on"
                                for n in (1, 2)]


def test_the_policy_refuses_captions_templates_and_names_before_anything_is_written(
        engine: Engine, tmp_path: Path) -> None:
    folder = tmp_path / "bad"
    write_concept_dataset(folder, "sepia", count=2)
    (folder / "01.txt").write_text("1girl, loli, nude")
    with pytest.raises(PolicyViolation, match=r"01\.txt"):
        engine.train_embedding("x", folder, 2, **QUICK)
    (folder / "01.txt").write_text("1girl, child")
    template = tmp_path / "template.txt"
    template.write_text("nude [name], [filewords]\n")
    with pytest.raises(PolicyViolation, match="with the template"):  # a caption and a line are drawn together
        engine.train_embedding("x", folder, 2, template=str(template), **QUICK)
    with pytest.raises(PolicyViolation):
        engine.train_embedding("loli nude", folder, 2, **QUICK)
    assert not (engine.workspace.home / "embeddings" / "x.pt").exists()
    assert not (engine.workspace.home / "training").exists()


def test_a_hypernetwork_trains_into_a_file_a1111_reads(engine: Engine, tmp_path: Path) -> None:
    folder = tmp_path / "sepia"
    write_concept_dataset(folder, "sepia", count=3)
    outcome = engine.train_hypernetwork("sepiastyle", folder, 3, learn_rate="0.0001", **QUICK)
    path = engine.workspace.home / "hypernetworks" / "sepiastyle.pt"
    assert outcome.path == path
    raw = load_pickle(path)
    assert {"layer_structure", "activation_func", "is_layer_norm", "weight_initialization", "sd_checkpoint",
            "sd_checkpoint_name", "activate_output", "use_dropout", "dropout_structure", "last_layer_dropout",
            "optional_info", "step", "name"} <= set(raw)
    assert raw["activation_func"] == "swish" and raw["weight_initialization"] == "KaimingNormal"  # the demo's defaults
    network = load_hypernetwork(path)
    parts = engine.load(None).components
    assert network.sizes == sorted(attention_widths(parts.unet, 128)) and network.step == 3
    assert network.provenance is not None and network.provenance["kind"] == "hypernetwork"
    optim = load_pickle(path.with_name("sepiastyle.pt.optim"))
    assert optim["hash"] == sha256_file(path)[:10] and optim["optimizer_name"] == "AdamW"
    # the UNet is left as it was; the tag applies the trained file
    plain = GenerationParams.create(prompt="1girl", steps=3, seed=2)
    before = engine.generate(plain, save=False).images[0].image
    tagged = engine.generate(plain.updated(prompt="1girl <hypernet:sepiastyle:1>"), save=False).images[0].image
    again = engine.generate(plain, save=False).images[0].image
    assert before.tobytes() == again.tobytes() != tagged.tobytes()
    resumed = engine.train_hypernetwork("sepiastyle", folder, 5, learn_rate="0.0001", resume=True, **QUICK)
    assert load_hypernetwork(resumed.path).step == 5


def test_open_options_take_a1111_defaults_and_the_demo_model_its_own() -> None:
    params = TrainingParams.create(kind="hypernetwork", name="h", data="d", steps=1)
    a1111 = params.with_defaults(demo_model=False)
    assert (a1111.learn_rate, a1111.activation_func, a1111.weight_initialization) == ("0.00001", "linear", "Normal")
    demo = params.with_defaults(demo_model=True)
    assert (demo.learn_rate, demo.activation_func, demo.weight_initialization) == ("0.0005", "swish", "KaimingNormal")
    chosen = params.model_copy(update={"activation_func": "tanh"}).with_defaults(demo_model=True)
    assert chosen.activation_func == "tanh"
    embedding = TrainingParams.create(kind="embedding", name="e", data="d", steps=1).with_defaults(demo_model=True)
    assert embedding.learn_rate == "0.005"
    lora = TrainingParams.create(kind="lora", name="l", data="d", steps=1)
    assert (lora.with_defaults(demo_model=False).lr_scheduler, lora.with_defaults(demo_model=True).lr_scheduler) == (
        "constant", "cosine")


def test_a_hypernetwork_at_an_embeddings_rate_is_refused(engine: Engine, data: Path) -> None:
    with pytest.raises(ParamsError, match="learn_rate: 0.005 is an embedding's learning rate"):
        engine.train_hypernetwork("h", data, 2, learn_rate="0.005")


def test_safetensors_alpha_weights_and_mixed_sizes(engine: Engine, tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    for i, size in enumerate([(64, 64), (64, 64), (48, 64)]):
        image = Image.new("RGBA", size, (200, 100, 50, 255))
        image.putpixel((0, 0), (0, 0, 0, 0))
        image.save(folder / f"{i}-red square.png")
    outcome = engine.train_embedding("sq", folder, 3, save_format="safetensors", use_weight=True, varsize=True,
                                     batch_size=2, **QUICK)
    embedding = load_embedding(outcome.path)
    assert outcome.path.suffix == ".safetensors" and embedding.step == 3 and embedding.provenance is not None


def test_the_cli_trains_and_refuses(tmp_path: Path, data: Path, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("EMAKI_HOME", str(tmp_path / "clihome"))
    main(["train", "embedding", "clineko", "--data", str(data), "--steps", "2", "--vectors", "2",
          "--init-text", "animal ears", "--preview-every", "0", "--threads", "1"])
    out = capsys.readouterr().out.strip()
    assert out == str(tmp_path / "clihome" / "embeddings" / "clineko.pt") and load_embedding(out).num_vectors == 2
    with pytest.raises(SystemExit) as exited:
        main(["train", "hypernetwork", "h", "--data", str(data), "--steps", "2", "--vectors", "2"])
    assert exited.value.code == 2 and "--vectors: only for training an embedding" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        main(["train", "embedding", "e", "--data", str(data), "--steps", "2", "--rank", "4"])
    assert exited.value.code == 2 and "--rank: only for training a lora" in capsys.readouterr().err
    main(["train", "lora", "clilora", "--data", str(data), "--steps", "2", "--rank", "2", "--conv-rank", "2",
          "--scheduler", "cosine", "--warmup", "1", "--min-snr-gamma", "5", "--preview-every", "0", "--threads", "1"])
    assert capsys.readouterr().out.strip().endswith("clilora.safetensors")
    with pytest.raises(SystemExit) as exited:
        main(["train", "embedding", "loli nude", "--data", str(data), "--steps", "2"])
    assert exited.value.code == 3


def test_a_lora_trains_into_a_kohya_file_that_applies_and_resumes(engine: Engine, tmp_path: Path) -> None:
    from safetensors import safe_open

    from emaki.models.hashes import tensor_data_hash

    folder = tmp_path / "sepia"
    write_concept_dataset(folder, "sepia", count=3)
    outcome = engine.train(TrainingParams.create(kind="lora", name="sepialora", data=str(folder), steps=3, **QUICK))
    path = engine.workspace.home / "loras" / "sepialora.safetensors"
    assert outcome.path == path
    with safe_open(str(path), framework="pt") as f:
        meta, keys = f.metadata(), set(f.keys())
    assert meta["ss_network_module"] == "networks.lora" and meta["ss_network_dim"] == "8"
    assert meta["ss_network_args"] == '{"conv_dim": "4", "conv_alpha": "4"}'  # the demo model's LoCon default
    assert meta["ss_steps"] == "3" and meta["ss_output_name"] == "sepialora" and meta["ss_num_train_images"] == "3"
    assert meta["sshs_model_hash"] == tensor_data_hash(path)
    assert "thick outlines" in meta["ss_tag_frequency"] or "sepia" in meta["ss_tag_frequency"]
    assert "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight" in keys
    assert any(k.startswith("lora_unet_down_blocks_0_resnets_0_conv1.") for k in keys)  # LoCon
    assert not any(k.startswith("lora_te_") for k in keys)  # the demo default trains the UNet only
    plain = GenerationParams.create(prompt="1girl", steps=3, seed=2)
    before = engine.generate(plain, save=False).images[0]
    tagged = engine.generate(plain.updated(prompt="1girl <lora:sepialora:1>"), save=False).images[0]
    zero = engine.generate(plain.updated(prompt="1girl <lora:sepialora:0>"), save=False).images[0]
    assert tagged.image.tobytes() != before.image.tobytes() == zero.image.tobytes()
    assert f"Lora hashes: \"sepialora: {meta['sshs_model_hash'][:12]}\"" in tagged.infotext
    resumed = engine.train(TrainingParams.create(kind="lora", name="sepialora", data=str(folder), steps=5,
                                                 resume=True, **QUICK))
    with safe_open(str(resumed.path), framework="pt") as f:
        assert f.metadata()["ss_steps"] == "5"


def test_a_lora_with_a_text_encoder_rate_trains_both(engine: Engine, data: Path) -> None:
    from safetensors import safe_open

    outcome = engine.train(TrainingParams.create(kind="lora", name="both", data=str(data), steps=2, network_dim=4,
                                                 text_encoder_lr=1e-4, conv_dim=0, **QUICK))
    with safe_open(str(outcome.path), framework="pt") as f:
        keys = set(f.keys())
    assert "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight" in keys
    assert not any("resnets" in k for k in keys)
    with pytest.raises(ParamsError, match="optimizer: 'Lion' is not a torch optimizer"):
        engine.train(TrainingParams.create(kind="lora", name="lion", data=str(data), steps=2, optimizer="Lion", **QUICK))
