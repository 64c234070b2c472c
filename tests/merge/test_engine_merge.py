"""`Engine.merge` and `Engine.extract_lora`: models found by name, file name or hash in the
workspace, the result in its checkpoint (LoRA) folder, byte for byte what `emaki merge` writes;
the CLI's errors naming the field; a cancelled run leaves no file."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
import torch
from merge_fixtures import write_random_models
from safetensors.torch import load_file, save_file
from test_merge_lora import random_lora, shapes_of
from typer.testing import CliRunner

import emaki.cli.merge  # noqa: F401  (registers `emaki merge`)
from emaki.cli import app
from emaki.engine.engine import Engine
from emaki.errors import Interrupted
from emaki.merge import MergeError
from emaki.models.hashes import HashCache
from emaki.workspace import Workspace

runner = CliRunner()


@pytest.fixture
def workspace() -> Workspace:
    """A workspace with checkpoints a, b, c (mini SD 1.5 layout) and a LoRA `secret` for them."""
    home = Path(os.environ["EMAKI_HOME"])
    models = write_random_models(home / "models")
    (home / "loras").mkdir()
    lora = random_lora(shapes_of(load_file(models / "a.safetensors")), 4, seed=7)
    save_file(lora, str(home / "loras" / "secret.safetensors"))
    return Workspace(home)


@pytest.fixture
def engine(workspace: Workspace) -> Engine:
    return Engine(workspace)


def test_merge_by_name_and_hash_writes_what_the_cli_writes(engine: Engine, workspace: Workspace, tmp_path: Path):
    folder = workspace.folders("checkpoints")[0]
    short = HashCache(workspace.hash_cache).get(folder / "a.safetensors").sha256[:10]
    seen: list[tuple[int, int]] = []
    out = engine.merge([short, "b.safetensors"], alpha=0.25, loras=[("secret", 0.5, 0.5)], output="ab",
                       progress=lambda done, total: seen.append((done, total)))
    assert out == folder / "ab.safetensors"
    assert seen and seen[-1][0] == seen[-1][1]

    cli_out = tmp_path / "ab.safetensors"
    result = runner.invoke(app, ["merge", str(folder / "a.safetensors"), str(folder / "b.safetensors"),
                                 "--alpha", "0.25", "--lora", "secret:0.5", "--out", str(cli_out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == cli_out.read_bytes()  # the same recipe, the same bytes

    a, b, merged = (load_file(folder / f"{n}.safetensors") for n in ("a", "b", "ab"))
    key = "first_stage_model.decoder.conv_in.weight"  # no LoRA reaches the VAE
    expected = (a[key].float() * 0.75 + b[key].float() * 0.25).half()
    assert torch.allclose(merged[key].float(), expected.float(), atol=1e-3)


def test_add_difference_takes_three_models_and_defaults_by_count(engine: Engine, workspace: Workspace):
    out = engine.merge(["a", "b", "c"], mode=None, alpha=1.0, output="abc.safetensors")
    folder = workspace.folders("checkpoints")[0]
    a, b, c, merged = (load_file(folder / f"{n}.safetensors") for n in ("a", "b", "c", "abc"))
    key = "model.diffusion_model.out.2.weight"
    assert out.name == "abc.safetensors"
    assert torch.allclose(merged[key].float(), (a[key].float() + b[key].float() - c[key].float()), atol=1e-2)


BAD_REQUESTS = [
    (["a", "nope"], {}, "models[1]: no model 'nope'"),
    (["a", "b", "c"], {"mode": "weighted-sum"}, "models: weighted-sum takes 2 models (A, B), got 3"),
    (["a", "b"], {"mode": "average"}, "mode: 'average' is not one of"),
    (["a", "b"], {"output": "sub/x.safetensors"}, "output: 'sub/x.safetensors' is not a plain file name"),
    (["a", "b"], {"output": "x.ckpt"}, "output: 'x.ckpt': emaki writes .safetensors"),
    (["a", "b"], {"output": "a.safetensors"}, "already exists"),
    (["a", "b"], {"blocks": [1.0] * 3}, "blocks: expected 25 values"),
    (["a", "b"], {"loras": [("missing", 1.0, 1.0)]}, "loras missing: no LoRA file"),
]


def test_bad_requests_name_the_field(engine: Engine, workspace: Workspace):
    for models, options, message in BAD_REQUESTS:  # one workspace for all (each is refused up front)
        with pytest.raises(MergeError) as error:
            engine.merge(models, **{"output": "new.safetensors", **options})
        assert message in str(error.value)
    assert not (workspace.folders("checkpoints")[0] / "new.safetensors").exists()


def test_overwrite_replaces_an_existing_output(engine: Engine, workspace: Workspace):
    folder = workspace.folders("checkpoints")[0]
    (folder / "old.safetensors").write_bytes(b"stale")
    engine.merge(["a", "b"], output="old.safetensors", overwrite=True)
    assert set(load_file(folder / "old.safetensors")) == set(load_file(folder / "a.safetensors"))


def test_cancelled_merge_and_extraction_leave_no_file(engine: Engine, workspace: Workspace):
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Interrupted):
        engine.merge(["a", "b"], output="gone.safetensors", cancel=cancel)
    with pytest.raises(Interrupted):
        engine.extract_lora("b", "a", rank=2, output="gone.safetensors", cancel=cancel)
    for folder in (workspace.folders("checkpoints")[0], workspace.folders("loras")[0]):
        assert not [p.name for p in folder.iterdir() if "gone" in p.name]  # nor a .partial


def test_extract_lora_recovers_a_baked_lora_into_the_lora_folder(engine: Engine, workspace: Workspace):
    engine.merge(["a"], loras=[("secret", 1.0, 1.0)], output="baked")
    layers: list[str] = []
    out = engine.extract_lora("baked", "a", rank=4, output="recovered",
                              progress=lambda done, total, key: layers.append(key))
    assert out == workspace.folders("loras")[0] / "recovered.safetensors"
    assert layers
    truth, found = load_file(workspace.folders("loras")[0] / "secret.safetensors"), load_file(out)
    name = next(k.removesuffix(".lora_up.weight") for k in truth if "attn2_to_k" in k and k.endswith("lora_up.weight"))

    def delta(tensors: dict[str, torch.Tensor]) -> torch.Tensor:
        up, down = tensors[f"{name}.lora_up.weight"].float(), tensors[f"{name}.lora_down.weight"].float()
        rank = down.shape[0]
        return up.flatten(1) @ down.flatten(1) * (float(tensors[f"{name}.alpha"]) / rank)

    expected = delta(truth)
    assert (delta(found) - expected).norm() / expected.norm() < 0.02
    with pytest.raises(MergeError, match="rank: expected a whole number"):
        engine.extract_lora("baked", "a", rank=0, output="r0")
