"""A writer killed mid-write leaves its hidden `.partial` beside the target; the next writer in
that folder (and every surface's workspace setup) removes the stale ones, and only those."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from emaki.files import STALE_PARTIAL_S, atomic_write, remove_stale_partials
from emaki.workspace import workspace_from_environment

HOUR = 3600.0


def age(path: Path, seconds: float) -> Path:
    """Set `path`'s (not a link target's) modification time `seconds` ago."""
    then = time.time() - seconds
    os.utime(path, (then, then), follow_symlinks=False)
    return path


def killed_atomic_write(folder: Path, name: str, hexdigits: str = "0123456789ab") -> Path:
    """What `atomic_write` leaves when its process is killed: the hidden folder, the file inside."""
    partial = folder / f".{name}.{hexdigits}.partial"
    partial.mkdir(parents=True)
    (partial / name).write_bytes(b"half")
    return partial


def test_atomic_write_names_its_temp_folder_as_the_cleanup_expects(tmp_path):
    writer = atomic_write(tmp_path / "a.txt")
    tmp = writer.__enter__()  # a writer that is then killed: its block never ends
    tmp.write_text("x")
    age(tmp, 2 * HOUR)
    age(tmp.parent, 2 * HOUR)
    assert remove_stale_partials(tmp_path, older_than_s=HOUR) == [tmp.parent]
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(FileNotFoundError):  # (had it lived on, it would fail, not half-write)
        writer.__exit__(None, None, None)
    assert not (tmp_path / "a.txt").exists()


def test_a_stale_partial_is_removed_and_a_fresh_one_kept(tmp_path):
    stale = killed_atomic_write(tmp_path, "model.safetensors")
    age(stale / "model.safetensors", 2 * HOUR)
    age(stale, 2 * HOUR)
    fresh = killed_atomic_write(tmp_path, "other.pt", "ba9876543210")
    merge_file = tmp_path / ".m.safetensors.0123abcd.partial"  # SafetensorsWriter's temp file
    merge_file.write_bytes(b"x")
    age(merge_file, 2 * HOUR)
    assert sorted(remove_stale_partials(tmp_path, older_than_s=HOUR)) == sorted([stale, merge_file])
    assert not stale.exists() and not merge_file.exists()
    assert (fresh / "other.pt").read_bytes() == b"half"


def test_a_partial_being_written_is_fresh_even_in_an_old_folder(tmp_path):
    partial = killed_atomic_write(tmp_path, "big.ckpt")
    age(partial, 2 * HOUR)  # the folder was made long ago; the file inside is still growing
    assert remove_stale_partials(tmp_path, older_than_s=HOUR) == []
    assert partial.exists()


def test_symlinks_are_never_followed(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    precious = killed_atomic_write(elsewhere, "keep.txt")
    age(precious / "keep.txt", 2 * HOUR)
    age(precious, 2 * HOUR)
    folder = tmp_path / "models"
    folder.mkdir()
    link = folder / ".keep.txt.0123456789ab.partial"
    link.symlink_to(precious, target_is_directory=True)
    file_link = folder / ".m.safetensors.0123abcd.partial"
    (elsewhere / "data").write_bytes(b"data")
    file_link.symlink_to(elsewhere / "data")
    age(link, 2 * HOUR)
    age(file_link, 2 * HOUR)
    inner = killed_atomic_write(folder, "x.txt")  # ours, but with a link inside
    (inner / "x.txt").unlink()
    (inner / "x.txt").symlink_to(elsewhere / "data")
    age(inner / "x.txt", 2 * HOUR)
    age(inner, 2 * HOUR)
    assert remove_stale_partials(folder, older_than_s=HOUR) == [inner]
    assert link.is_symlink() and file_link.is_symlink()
    assert (precious / "keep.txt").read_bytes() == b"half"
    assert (elsewhere / "data").read_bytes() == b"data"


@pytest.mark.parametrize(
    "name",
    [".notes.partial", "visible.0123456789ab.partial", ".x.0123456789ab.partial.bak",
     ".x.zzzzzzzzzzzz.partial", ".x.0123456789ab.tmp"],
)
def test_only_atomic_write_leftovers_are_touched(tmp_path, name):
    entry = tmp_path / name
    entry.write_bytes(b"someone else's")
    age(entry, 10 * HOUR)
    assert remove_stale_partials(tmp_path, older_than_s=HOUR) == []
    assert entry.exists()


def test_a_partial_folder_holding_anything_else_is_left_alone(tmp_path):
    partial = killed_atomic_write(tmp_path, "a.txt")
    (partial / "unexpected").write_text("?")
    (partial / "sub").mkdir()
    for path in (partial / "a.txt", partial / "unexpected", partial / "sub", partial):
        age(path, 2 * HOUR)
    assert remove_stale_partials(tmp_path, older_than_s=HOUR) == []
    assert (partial / "a.txt").exists()


def test_a_missing_folder_or_a_file_is_no_error(tmp_path):
    assert remove_stale_partials(tmp_path / "nope", older_than_s=HOUR) == []
    (tmp_path / "f").write_text("x")
    assert remove_stale_partials(tmp_path / "f", older_than_s=HOUR) == []


def test_workspace_setup_cleans_the_folders_emaki_writes(tmp_path):
    home = tmp_path / "home"
    leftovers = []
    for sub in ("", "models", "models/VAE", "embeddings", "hypernetworks", "loras", "cache"):
        partial = killed_atomic_write(home / sub, "f.bin")
        age(partial / "f.bin", STALE_PARTIAL_S + 60)
        leftovers.append(age(partial, STALE_PARTIAL_S + 60))
    fresh = killed_atomic_write(home / "models", "g.bin")
    workspace_from_environment({"EMAKI_HOME": str(home)})
    assert [p for p in leftovers if p.exists()] == []
    assert fresh.exists()


def test_saving_an_image_clears_a_killed_save_s_temp_image(tmp_path):
    from PIL import Image

    from emaki.engine.output import save_png

    stale = tmp_path / ".emaki-k2x9_a1b.png.tmp"
    stale.write_bytes(b"half a png")
    age(stale, 2 * HOUR)
    fresh = tmp_path / ".emaki-zz81q0pp.png.tmp"  # another process saving right now
    fresh.write_bytes(b"being written")
    saved = save_png(Image.new("RGB", (8, 8)), "a\nSteps: 1", tmp_path, seed=3)
    assert saved.name == "00000-3.png"
    assert not stale.exists() and fresh.exists()
