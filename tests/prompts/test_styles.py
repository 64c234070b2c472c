"""Prompt styles as A1111 v1.10 keeps them: styles.csv read (quoting, BOM, old format, several
files), applied ({prompt} placeholder, ", " joining), taken back out of a prompt, and written."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from emaki.errors import ParamsError
from emaki.prompts.styles import (
    Style,
    apply_styles,
    delete_style,
    extract_styles,
    merge_style,
    read_styles,
    read_styles_file,
    save_style,
    styles_files,
    unstyled_text,
)
from emaki.workspace import Workspace


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_text(text, encoding=encoding, newline="")
    return path


def test_reads_a1111_csv_with_bom_quotes_spaces_comments_and_blank_lines(tmp_path):
    path = write(tmp_path / "styles.csv",
                 'name,prompt,negative_prompt\r\n'
                 '"Anime base","masterpiece, best quality, {prompt}","lowres, bad anatomy"\r\n'
                 '\r\n'
                 '# old,ignored,row\r\n'
                 'Plain, "watercolor, soft", \r\n'
                 'multi,"line one\nline two",\r\n', encoding="utf-8-sig")
    styles = {s.name: s for s in read_styles_file(path)}
    assert list(styles) == ["Anime base", "Plain", "multi"]
    assert styles["Anime base"] == Style("Anime base", "masterpiece, best quality, {prompt}", "lowres, bad anatomy",
                                         path)
    assert styles["Plain"].prompt == "watercolor, soft"  # A1111 reads with skipinitialspace
    assert styles["multi"].prompt == "line one\nline two"


def test_reads_the_old_name_text_format_and_short_rows(tmp_path):
    path = write(tmp_path / "old.csv", "name,text\nold style,oil painting\nbare\n")
    assert read_styles_file(path) == [Style("old style", "oil painting", "", path), Style("bare", "", "", path)]


def test_a_later_row_of_a_name_replaces_the_earlier_one(tmp_path):
    path = write(tmp_path / "s.csv", "name,prompt,negative_prompt\na,one,\nb,two,\na,three,\n")
    assert [(s.name, s.prompt) for s in read_styles_file(path)] == [("b", "two"), ("a", "three")]


def test_missing_file_has_no_styles(tmp_path):
    assert read_styles_file(tmp_path / "none.csv") == []
    assert read_styles([tmp_path / "none.csv"]) == {}


@pytest.mark.parametrize("text, line, expected", [
    ("name,prompt,negative_prompt\na,b,c\nx,one, two, three\n", 3, "4 fields"),
    ('name,prompt,negative_prompt\na,"unclosed\n', 2, "not a valid CSV row"),
    ('name,prompt,negative_prompt\na,"b"c,d\n', 2, "not a valid CSV row"),
    ("title,body\na,b\n", 1, "header"),
])
def test_a_malformed_file_names_the_file_and_the_line(tmp_path, text, line, expected):
    path = write(tmp_path / "styles.csv", text)
    with pytest.raises(ParamsError, match=expected) as error:
        read_styles_file(path)
    assert f"{path}, line {line}" in str(error.value)


def test_not_utf8_is_a_clear_error(tmp_path):
    path = tmp_path / "styles.csv"
    path.write_bytes(b"name,prompt\n\xff\xfe,x\n")
    with pytest.raises(ParamsError, match="not UTF-8"):
        read_styles_file(path)


def test_several_files_the_first_files_name_wins(tmp_path):
    home, a1111 = tmp_path / "home", tmp_path / "a1111"
    home.mkdir(), a1111.mkdir()
    write(home / "styles.csv", "name,prompt,negative_prompt\nshared,mine,\n")
    write(a1111 / "styles.csv", "name,prompt,negative_prompt\nshared,theirs,\nonly there,x,\n")
    files = styles_files(Workspace(home, a1111))
    assert files == [home / "styles.csv", a1111 / "styles.csv"]
    styles = read_styles(files)
    assert list(styles) == ["shared", "only there"]
    assert styles["shared"].prompt == "mine" and styles["only there"].path == a1111 / "styles.csv"
    assert styles_files(Workspace(home)) == [home / "styles.csv"]


@pytest.mark.parametrize("style, prompt, expected", [
    ("masterpiece, {prompt}, detailed", "1girl", "masterpiece, 1girl, detailed"),
    ("{prompt} {prompt}", "cat", "cat cat"),  # every placeholder
    ("  anime  ", " 1girl ", "1girl, anime"),  # both stripped, joined with ", "
    ("anime", "", "anime"),
    ("", "1girl", "1girl"),
    ("{prompt}", "", ""),
])
def test_merge_follows_a1111(style, prompt, expected):
    assert merge_style(style, prompt) == expected


def test_styles_apply_in_order_to_both_prompts():
    styles = {"frame": Style("frame", "masterpiece, {prompt}", "lowres, {prompt}"),
              "tail": Style("tail", "anime coloring", "jpeg artifacts")}
    assert apply_styles("1girl", "bad hands", ["frame", "tail"], styles) == (
        "masterpiece, 1girl, anime coloring", "lowres, bad hands, jpeg artifacts")
    assert apply_styles("1girl", "", ["tail", "frame"], styles) == (
        "masterpiece, 1girl, anime coloring", "lowres, jpeg artifacts")
    assert apply_styles("1girl", "x", [], styles) == ("1girl", "x")


def test_an_unknown_style_names_it_and_lists_the_styles():
    styles = {"Anime base": Style("Anime base", "a"), "Other": Style("Other", "b")}
    with pytest.raises(ParamsError, match=r"'Nope'.*\"Anime base\", \"Other\""):
        apply_styles("1girl", "", ["Anime base", "Nope"], styles)
    with pytest.raises(ParamsError, match="no styles file"):
        apply_styles("1girl", "", ["Nope"], {})


@pytest.mark.parametrize("style, prompt, expected", [
    ("masterpiece", "1girl, art by greg, masterpiece", "1girl, art by greg"),  # A1111's docstring examples
    ("masterpiece, {prompt}", "masterpiece, 1girl, art by greg", "1girl, art by greg"),
    ("masterpiece, {prompt}", "exquisite, 1girl, art by greg", None),
    ("a {prompt} b {prompt}", "a x b x", None),  # two placeholders cannot be undone
    ("ab, {prompt}, ba", "ab, ba", None),  # the frame's halves overlap: no prompt inside
    ("", "1girl ", "1girl"),
])
def test_unstyled_text_follows_a1111(style, prompt, expected):
    assert unstyled_text(style, prompt) == expected


def test_extract_takes_styles_out_and_applying_them_again_gives_the_prompt():
    styles = [Style("frame", "masterpiece, {prompt}", "lowres"), Style("tail", "anime coloring", ""),
              Style("empty"), Style("unused", "photo", "")]
    by_name = {s.name: s for s in styles}
    for names in (["frame"], ["tail"], ["frame", "tail"], ["tail", "frame"]):
        prompt, negative = apply_styles("1girl, smile", "bad hands", names, by_name)
        found, bare, bare_negative = extract_styles(prompt, negative, styles)
        assert (bare, bare_negative) == ("1girl, smile", "bad hands"), names
        assert apply_styles(bare, bare_negative, found, by_name) == (prompt, negative)


def test_extract_needs_the_negative_part_too():
    styles = [Style("frame", "masterpiece, {prompt}", "lowres")]
    assert extract_styles("masterpiece, 1girl", "blurry", styles) == ([], "masterpiece, 1girl", "blurry")


def test_save_creates_updates_in_place_and_delete_removes(tmp_path):
    path = tmp_path / "home" / "styles.csv"
    save_style(path, Style("Anime base", "masterpiece, {prompt}", "lowres, bad anatomy"))
    assert path.read_bytes().startswith(b"\xef\xbb\xbfname,prompt,negative_prompt\r\n")  # A1111 writes a BOM
    save_style(path, Style("Other", 'say "hi", then {prompt}'))
    save_style(path, Style("Anime base", "changed"))
    assert [(s.name, s.prompt) for s in read_styles_file(path)] == [("Anime base", "changed"),
                                                                    ("Other", 'say "hi", then {prompt}')]
    delete_style(path, "Anime base")
    assert [s.name for s in read_styles_file(path)] == ["Other"]
    with pytest.raises(ParamsError, match="no style named 'Anime base'"):
        delete_style(path, "Anime base")
    assert [p.name for p in path.parent.iterdir()] == ["styles.csv"]  # no temp file left


def test_written_file_reads_back_as_a1111_reads_it(tmp_path):
    path = tmp_path / "styles.csv"
    save_style(path, Style("q", 'a, "b"\nc', "d"))
    with open(path, encoding="utf-8-sig", newline="") as file:
        rows = list(csv.DictReader(file, skipinitialspace=True))
    assert rows == [{"name": "q", "prompt": 'a, "b"\nc', "negative_prompt": "d"}]


def test_saving_keeps_comment_rows_and_other_styles(tmp_path):
    path = write(tmp_path / "styles.csv", "name,text\n# my notes,,\nkeep,x\n")
    save_style(path, Style("new", "y"))
    assert path.read_text(encoding="utf-8-sig").splitlines() == [
        "name,prompt,negative_prompt", "# my notes,,", "keep,x,", "new,y,"]


@pytest.mark.parametrize("name", ["", "  ", " padded", "# comment", "two\nlines", "x" * 300])
def test_names_that_would_not_read_back_are_refused(tmp_path, name):
    with pytest.raises(ParamsError, match="style name"):
        save_style(tmp_path / "styles.csv", Style(name, "a"))
    assert not (tmp_path / "styles.csv").exists()
