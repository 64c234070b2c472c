"""`emaki styles list|add|remove` and `emaki generate --style` / wildcards / `--from`, in process
(the CLI's `main`: real exit codes and output, no interpreter start-up)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from cli_runner import run_cli as run
from PIL import Image

from emaki.infotext import parse_infotext, read_infotext


def home() -> Path:
    return Path(os.environ["EMAKI_HOME"])


def test_add_list_replace_and_remove(capsys):
    code, out, err = run(capsys, "styles", "add", "Anime base", "--prompt", "masterpiece, {prompt}", "--negative",
                         "lowres, [bad]")
    assert code == 0, err
    assert "added style 'Anime base'" in out
    assert run(capsys, "styles", "add", "Other", "-p", "anime coloring")[0] == 0
    code, out, _ = run(capsys, "styles", "list")
    assert code == 0 and "Anime base" in out and "lowres, [bad]" in out  # brackets shown, not read as markup
    code, out, _ = run(capsys, "styles", "add", "Anime base", "-p", "best, {prompt}")
    assert "replaced" in out
    code, out, _ = run(capsys, "styles", "list", "--json")
    rows = json.loads(out)
    assert [(r["name"], r["prompt"], r["negative_prompt"]) for r in rows] == [
        ("Anime base", "best, {prompt}", ""), ("Other", "anime coloring", "")]
    assert rows[0]["path"] == str(home() / "styles.csv")
    assert run(capsys, "styles", "remove", "Other")[0] == 0
    assert [r["name"] for r in json.loads(run(capsys, "styles", "list", "--json")[1])] == ["Anime base"]


def test_errors_are_one_line(capsys, tmp_path):
    a1111 = tmp_path / "a1111"
    a1111.mkdir()
    (a1111 / "styles.csv").write_text("name,prompt,negative_prompt\ntheirs,x,\n")
    cases = [
        (("styles", "remove", "nope"), "no style named 'nope'"),
        (("styles", "remove", "theirs", "--a1111", str(a1111)), "which emaki does not write"),
        (("styles", "add", "# hidden", "-p", "x"), "must not start with #"),
        (("styles", "add", "empty"), "give --prompt"),
    ]
    for args, expected in cases:
        code, _, err = run(capsys, *args)
        assert code == 2 and expected in err and len(err.strip().splitlines()) == 1, (args, err)
    code, out, _ = run(capsys, "styles", "list", "--a1111", str(a1111), "--json")
    assert [r["name"] for r in json.loads(out)] == ["theirs"]
    (home() / "styles.csv").write_text('name,prompt,negative_prompt\nok,a,b\nbroken,"x\n')
    code, _, err = run(capsys, "styles", "list")
    assert code == 2 and f"{home() / 'styles.csv'}, line 3" in err


def test_generate_with_styles_and_wildcards_then_from(capsys, tmp_path):
    (home() / "wildcards").mkdir(parents=True)
    (home() / "wildcards" / "haircolor.txt").write_text("red\nblue\nsilver\ngreen\n")
    assert run(capsys, "styles", "add", "Anime base", "-p", "masterpiece, {prompt}", "-n", "lowres")[0] == 0
    assert run(capsys, "styles", "add", "Other", "-p", "anime coloring")[0] == 0
    out = tmp_path / "out"
    code, printed, err = run(capsys, "generate", "1girl, __haircolor__ hair", "--style", "Anime base", "--style",
                             "Other", "--batch-count", "4", "--steps", "2", "--size", "64x64", "--seed", "7",
                             "--out", str(out))
    assert code == 0, err
    files = sorted(out.glob("*.png"))
    assert [f.name for f in files] == ["00000-7.png", "00001-8.png", "00002-9.png", "00003-10.png"]
    assert printed.split() == [str(f) for f in files]
    texts = [parse_infotext(read_infotext(f)) for f in files]
    assert len({t["Prompt"] for t in texts}) > 1
    for text in texts:
        assert text["Prompt"].startswith("masterpiece, 1girl, ") and text["Prompt"].endswith(" hair, anime coloring")
        assert text["Negative prompt"] == "lowres"
        assert text["Wildcard prompt"] == "masterpiece, 1girl, __haircolor__ hair, anime coloring"

    # --from takes the styles back out of the prompt; the same styles make the same prompt again.
    again = tmp_path / "again"
    code, _, err = run(capsys, "generate", "--from", str(files[1]), "--out", str(again))
    assert code == 0, err
    [made] = again.glob("*.png")
    assert parse_infotext(read_infotext(made))["Prompt"] == texts[1]["Prompt"]
    assert np.array_equal(np.asarray(Image.open(made)), np.asarray(Image.open(files[1])))


def test_an_unknown_style_exits_2_and_writes_nothing(capsys, tmp_path):
    out = tmp_path / "out"
    code, _, err = run(capsys, "generate", "1girl", "--style", "Nope", "--steps", "1", "--out", str(out))
    assert code == 2 and "'Nope'" in err and "no styles file" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
