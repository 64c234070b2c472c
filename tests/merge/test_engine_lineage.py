"""`Engine.lineage` and `Engine.hashes_of`: models found by name, file name or hash in the
workspace, the result what `emaki lineage --json` prints (which takes the same names now); bad
input refused naming the field before anything is read; a cancelled trace stops."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest
from cli_runner import run_cli
from merge_fixtures import write_random_models
from typer.testing import CliRunner

import emaki.cli.merge  # noqa: F401  (registers `emaki lineage`)
from emaki.cli import app
from emaki.engine.engine import Engine
from emaki.errors import Interrupted
from emaki.merge import MergeError
from emaki.merge.blocks import UNET_BLOCKS
from emaki.models.hashes import HashCache
from emaki.workspace import Workspace

runner = CliRunner()
ALPHA = 0.3


@pytest.fixture
def workspace() -> Workspace:
    """Checkpoints a, b, c (mini SD 1.5 layout, fp16) in the model folder."""
    home = Path(os.environ["EMAKI_HOME"])
    write_random_models(home / "models")
    return Workspace(home)


@pytest.fixture
def engine(workspace: Workspace) -> Engine:
    return Engine(workspace)


def test_lineage_by_name_and_hash_is_what_the_cli_prints(engine: Engine, workspace: Workspace) -> None:
    folder = workspace.folders("checkpoints")[0]
    engine.merge(["a", "c"], alpha=ALPHA, output="mix")
    short = HashCache(workspace.hash_cache).get(folder / "c.safetensors").sha256[:10]
    seen: list[tuple[int, int]] = []
    result = engine.lineage("mix", ["a.safetensors", "b", short],
                            progress=lambda done, total: seen.append((done, total)))
    assert seen and seen[-1][0] == seen[-1][1] > 0
    a, b, c = (str(folder / f"{n}.safetensors") for n in "abc")
    assert result.model == str(folder / "mix.safetensors") and result.candidates == [a, b, c]
    for block in UNET_BLOCKS:
        fit = result.blocks[block]
        assert fit.coefficients[a] == pytest.approx(1 - ALPHA, abs=5e-3), block
        assert fit.coefficients[c] == pytest.approx(ALPHA, abs=5e-3), block
        assert abs(fit.coefficients[b]) < 5e-3 and fit.residual < 5e-3
    assert result.summary()[0].startswith("IN00–OUT11: 0.70·a") and "0.30·c" in result.summary()[0]

    # `emaki lineage` takes the same names (and a hash), and prints the same result
    cli = runner.invoke(app, ["lineage", "mix", "--candidates", "a.safetensors", "b", short, "--json"])
    assert cli.exit_code == 0, cli.output
    assert json.loads(cli.stdout) == json.loads(json.dumps(result.to_dict()))

    # nonnegative: the candidate not taking part gets exactly 0
    sparse = engine.lineage("mix", ["a", "b", "c"], nonnegative=True)
    assert sparse.to_dict()["method"] == "nonnegative least squares"
    assert all(fit.coefficients[b] == 0 for fit in sparse.blocks.values())


BAD_REQUESTS = [
    ("nope", ["a"], {}, "model: no model 'nope'"),
    ("a", ["b", "ghost"], {}, "candidates[1]: no model 'ghost'"),
    ("a", [], {}, "candidates: give at least one candidate model"),
    ("a", "b", {}, "candidates: expected a list"),
    ("a", ["b", "c", "b.safetensors"], {}, "candidates[2]: 'b.safetensors' is the same file as candidates[0]"),
    ("a", ["b"], {"nonnegative": "yes"}, "nonnegative: expected true or false"),
]


def test_bad_requests_name_the_field_before_reading(engine: Engine) -> None:
    read: list[int] = []
    for model, candidates, options, message in BAD_REQUESTS:
        with pytest.raises(MergeError) as error:
            engine.lineage(model, candidates, progress=lambda done, total: read.append(done), **options)
        assert message in str(error.value)
    assert not read


def test_the_cli_names_its_argument_for_an_unknown_name(workspace: Workspace,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "lineage", "a", "--candidates", "b", "nope")
    assert code != 0 and "--candidates[1]: no model 'nope'" in err and "Traceback" not in err


def test_a_cancelled_lineage_stops_with_interrupted(engine: Engine) -> None:
    cancel = threading.Event()
    calls: list[int] = []

    def first_slice(done: int, total: int) -> None:
        calls.append(done)
        cancel.set()  # as a user's cancel would, while it reads

    with pytest.raises(Interrupted, match="lineage interrupted"):
        engine.lineage("a", ["b", "c"], progress=first_slice, cancel=cancel)
    assert len(calls) == 1


def test_hashes_of_a_model_by_name_are_what_emaki_hash_prints(engine: Engine, workspace: Workspace) -> None:
    hashes = engine.hashes_of("a")
    cli = runner.invoke(app, ["hash", str(workspace.folders("checkpoints")[0] / "a.safetensors"), "--json"])
    assert cli.exit_code == 0, cli.output
    [printed] = json.loads(cli.stdout).values()
    assert hashes == printed and len(hashes["sha256"] or "") == 64 and hashes["autov2"] == hashes["sha256"][:10]
    with pytest.raises(MergeError, match="model: no model 'nope'"):
        engine.hashes_of("nope")
