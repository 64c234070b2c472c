"""`emaki merge`, `emaki lineage`, `emaki hash` and the hash cache."""

from __future__ import annotations

import hashlib
import json
import os

import pytest
from safetensors import safe_open
from typer.testing import CliRunner

import emaki.cli.merge  # noqa: F401  (registers the commands)
from emaki.cli import app
from emaki.merge import MergeError
from emaki.models import hashes
from emaki.models.hashes import (
    HashCache,
    autov2_hash,
    file_hashes,
    legacy_hash,
    sha256_file,
    tensor_data_hash,
)

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=True)


def test_file_hashes_match_the_single_hash_functions(make_model, tmp_path):
    path = make_model("a.safetensors", 1)
    h = file_hashes(path)
    assert (h.sha256, h.autov2, h.legacy, h.tensor_data) == (
        sha256_file(path),
        autov2_hash(path),
        legacy_hash(path),
        tensor_data_hash(path),
    )
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    assert h.tensor_data == hashlib.sha256(data[8 + n :]).hexdigest()
    assert h.legacy == hashlib.sha256(data[0x100000:0x110000]).hexdigest()[:8]
    ckpt = make_model("a.ckpt", 1, fmt="ckpt")
    assert file_hashes(ckpt).tensor_data is None


def test_hash_cache_is_keyed_by_path_size_and_mtime(make_model, tmp_path, monkeypatch):
    path = make_model("a.safetensors", 1)
    calls = []
    real = hashes.file_hashes
    monkeypatch.setattr(hashes, "file_hashes", lambda p, **kw: calls.append(p) or real(p, **kw))
    first = HashCache(tmp_path / "cache.json").get(path)
    again = HashCache(tmp_path / "cache.json").get(path)  # a new process: read from the file
    assert first == again and len(calls) == 1
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    HashCache(tmp_path / "cache.json").get(path)
    assert len(calls) == 2
    (tmp_path / "cache.json").write_text("{broken")
    assert HashCache(tmp_path / "cache.json").get(path) == first


def test_cli_hash(make_model):
    path = make_model("a.safetensors", 1)
    result = run("hash", path, "--json")
    assert result.exit_code == 0, result.output
    h = json.loads(result.output)[str(path)]
    assert (
        h["sha256"] == sha256_file(path)
        and h["autov2"] == h["sha256"][:10]
        and len(h["legacy"]) == 8
    )
    text = run("hash", path).output
    assert "AutoV2" in text and h["tensor_data"] in text


def test_cli_merge_replay_and_lineage(make_model, tmp_path):
    a, b = make_model("a.safetensors", 1), make_model("b.ckpt", 2, fmt="ckpt")
    out = tmp_path / "mix.safetensors"
    blocks = ",".join(str(i / 24) for i in range(25))
    result = run(
        "merge",
        a,
        b,
        "--alpha",
        "0.4",
        "--blocks",
        blocks,
        "--te-alpha",
        "0.2",
        "--dtype",
        "fp16",
        "--out",
        out,
        "--save-recipe",
        tmp_path / "mix.json",
    )
    assert result.exit_code == 0, result.output
    assert str(out) in result.stdout
    with safe_open(str(out), "pt") as f:
        meta = f.metadata()
    assert json.loads(meta["sd_merge_recipe"])["multiplier"] == 0.4
    recipe = json.loads((tmp_path / "mix.json").read_text())
    assert recipe["output"] == str(out) and recipe["text_encoder_alpha"] == 0.2
    replay = run(
        "merge", "--recipe", tmp_path / "mix.json", "--out", tmp_path / "again.safetensors"
    )
    assert replay.exit_code == 0, replay.output
    assert (tmp_path / "again.safetensors").read_bytes() == out.read_bytes()

    lineage = run("lineage", out, "--candidates", a, b, "--json")
    assert lineage.exit_code == 0, lineage.output
    data = json.loads(lineage.stdout)
    assert data["blocks"]["OUT11"]["coefficients"][str(b)] == pytest.approx(1.0, abs=2e-3)
    assert data["blocks"]["TE"]["coefficients"][str(a)] == pytest.approx(0.8, abs=2e-3)
    text = run("lineage", out, "-c", a, "-c", b).stdout
    assert "TE: 0.80·a + 0.20·b" in text


def test_cli_errors_are_emaki_errors(make_model, tmp_path):
    a = make_model("a.safetensors", 1)
    result = run("merge", a, tmp_path / "nope.ckpt", "--out", tmp_path / "o.safetensors")
    assert isinstance(result.exception, MergeError) and "models[1]: no model" in str(result.exception)
    assert "nope.ckpt" in str(result.exception)
    result = run("merge", a, a, "--blocks", "1,2,3", "--out", tmp_path / "o.safetensors")
    assert "--blocks: expected 25 values" in str(result.exception)
    result = run(
        "merge",
        "--recipe",
        tmp_path / "r.json",
        "--alpha",
        "0.3",
        "--out",
        tmp_path / "o.safetensors",
    )
    assert "drop --alpha" in str(result.exception)
    result = run("merge", a, a, "--out", tmp_path / "o.ckpt")
    assert ".safetensors" in str(result.exception)


def test_main_prints_errors_on_one_line(make_model, tmp_path, capsys, monkeypatch):
    """Through the real entry point: one line on stderr, exit code 2."""
    from emaki import cli

    monkeypatch.setattr(
        cli, "_register_commands", lambda: None
    )  # other modules' commands are not needed
    a = make_model("a.safetensors", 1)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(
            ["merge", str(a), str(tmp_path / "nope.ckpt"), "--out", str(tmp_path / "o.safetensors")]
        )
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "error:" in err and "models[1]: no model" in err and "nope.ckpt" in err
    assert len(err.strip().splitlines()) == 1


def test_cli_merge_takes_model_names_from_the_workspace(make_model, tmp_path):
    import shutil

    from emaki.workspace import default_home

    folder = default_home(os.environ) / "models"
    folder.mkdir(parents=True, exist_ok=True)
    for name, seed in (("a", 1), ("b", 2)):
        shutil.copy(make_model(f"{name}.safetensors", seed), folder / f"{name}.safetensors")
    out = tmp_path / "named.safetensors"
    result = run("merge", "a", "b.safetensors", "--alpha", "0.5", "--out", out)
    assert result.exit_code == 0, result.output
    by_path = run("merge", folder / "a.safetensors", folder / "b.safetensors", "--alpha", "0.5",
                  "--out", tmp_path / "by-path.safetensors")
    assert by_path.exit_code == 0, by_path.output
    with safe_open(str(out), "pt") as named, safe_open(str(tmp_path / "by-path.safetensors"), "pt") as pathed:
        assert all(named.get_tensor(k).equal(pathed.get_tensor(k)) for k in named.keys())  # noqa: SIM118 (a safe_open handle is no dict)
