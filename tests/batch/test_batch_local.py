"""`emaki batch` on the local executor: the demo model at 64x64, 2 steps."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from batch_files import TINY, FakeExecutor, fake_png, write_jsonl
from PIL import Image

from emaki.batch.run import batch_lock, run_batch
from emaki.batch.spec import read_batch
from emaki.batch.summary import read_summary
from emaki.errors import EmakiError, ParamsError
from emaki.jobs.rendered import JobOutcome


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """`emaki batch ...` in this process: exit code, stdout, stderr."""
    from emaki.cli import main

    try:
        main(["batch", *args])
        code = 0
    except SystemExit as stop:
        code = int(stop.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def pngs(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.png"))}


def hidden_leftovers(folder: Path) -> list[str]:
    """Entries a writer left besides the images, the summary and the run's lock file."""
    return sorted(p.name for p in folder.iterdir()
                  if p.suffix != ".png" and p.name not in ("summary.csv", ".emaki-batch.lock"))


def test_three_items_make_three_pngs_with_infotext_and_a_rerun_skips_them(tmp_path, capsys):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [
        {"prompt": "1girl, smile", **TINY},
        {"prompt": "1boy", "seed": 7, **TINY},
        {"prompt": "cat", "negative_prompt": "lowres", "sampler_name": "Euler", **TINY},
    ])
    out = tmp_path / "run1"
    code, stdout, stderr = run_cli(capsys, str(prompts), "--out", str(out), "--threads", "1")
    assert code == 0, stderr
    assert "3 done" in stdout
    items = read_batch(prompts)
    rows = read_summary(out)
    assert [(r["line"], r["key"], r["status"], r["file"], r["error"]) for r in rows] == [
        (str(i.line), i.key, "done", f"{i.key}.png", "") for i in items]
    assert all(float(r["seconds"]) > 0 for r in rows)
    assert items[1].params.seed == 7 and items[0].params.seed != -1  # -1 drawn from the key
    for item in items:
        text = Image.open(out / f"{item.key}.png").info["parameters"]
        assert text.startswith(item.params.prompt)
        assert f"Seed: {item.params.seed}, Size: 64x64" in text and "Steps: 2" in text
    made = pngs(out)
    assert sorted(made) == sorted(f"{i.key}.png" for i in items)
    assert hidden_leftovers(out) == []

    code, stdout, stderr = run_cli(capsys, str(prompts), "--out", str(out), "--threads", "1")
    assert code == 0, stderr
    assert "0 done, 3 already done" in stdout
    assert [r["status"] for r in read_summary(out)] == ["skipped"] * 3
    assert [r["seconds"] for r in read_summary(out)] == [r["seconds"] for r in rows]  # the earlier run's
    assert pngs(out) == made

    # A lost image is made again, the same: its random seed comes from its key.
    (out / f"{items[0].key}.png").unlink()
    code, stdout, stderr = run_cli(capsys, str(prompts), "--out", str(out), "--threads", "1")
    assert code == 0, stderr
    assert [r["status"] for r in read_summary(out)] == ["done", "skipped", "skipped"]
    assert pngs(out) == made


def test_a_failing_item_is_failed_with_its_reason_and_the_others_are_made(tmp_path, capsys):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [
        {"prompt": "1girl", "model": "no-such-model", **TINY},
        {"prompt": "1boy", **TINY},
    ])
    out = tmp_path / "run"
    code, _, stderr = run_cli(capsys, str(prompts), "--out", str(out), "--threads", "1")
    assert code == 1
    assert "1 of 2 items failed" in stderr
    failed, done = read_summary(out)
    assert failed["status"] == "failed" and "no-such-model" in failed["error"]
    assert done["status"] == "done"
    assert list(pngs(out)) == [done["file"]]
    assert hidden_leftovers(out) == []


@pytest.mark.parametrize(("line", "named"), [
    ('{"prompt": "1girl", "steps": 0}', "steps"),
    ('{"prompt": "1girl", "width": 60}', "width"),
    ('{"prompt": "1girl", "sampler": "Euler"}', "sampler"),
    ('{"prompt": "1girl",', "not valid JSON"),
    ('["1girl"]', "expected a JSON object"),
    ('{"prompt": "1girl", "speed": "turbo"}', "speed: expected exact or fast"),
])
def test_a_bad_line_is_named_before_anything_runs(tmp_path, line, named):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "ok"}, "", line, {"prompt": "ok too"}])
    with pytest.raises(ParamsError, match=rf"prompts\.jsonl:3: .*{named}"):
        read_batch(prompts)


def test_a_line_may_name_a_speed_preset_under_its_own_fields(tmp_path):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [
        {"prompt": "a", "steps": 12, "speed": "fast", "token_merging_ratio": 0}, {"prompt": "a", "steps": 12}])
    fast, exact = (item.params for item in read_batch(prompts))
    assert (fast.s_min_uncond, fast.s_min_uncond_all, fast.gate_step, fast.token_merging_ratio) == (4.0, True, 6, 0.0)
    assert (exact.s_min_uncond, exact.gate_step) == (0.0, 0)


def test_a_bad_line_exits_2_naming_the_line_and_writes_nothing(tmp_path, capsys):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "1girl", **TINY}, {"prompt": "x", "cfg_scale": -1}])
    code, _, stderr = run_cli(capsys, str(prompts), "--out", str(tmp_path / "run"))
    assert code == 2
    assert "prompts.jsonl:2: " in stderr and "cfg_scale" in stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("options", "named"), [
    (["--executor", "slurm"], "--executor: expected local or ray"),
    (["--executor", "ray", "--workers", "0"], "--workers: expected 1 or more"),
    (["--executor", "ray", "--precision", "fp8"], "--precision"),
])
def test_bad_executor_options_exit_2_before_anything_starts(tmp_path, capsys, options, named):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "1girl", **TINY}])
    code, _, stderr = run_cli(capsys, str(prompts), "--out", str(tmp_path / "run"), *options)
    assert code == 2
    assert named in stderr
    assert not (tmp_path / "run").exists()


def test_a_refused_prompt_is_refused_before_any_image(tmp_path, capsys):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [
        {"prompt": "1girl, smile", **TINY}, {"prompt": "1boy", **TINY}, {"prompt": "loli, nude", **TINY}])
    code, _, stderr = run_cli(capsys, str(prompts), "--out", str(tmp_path / "run"))
    assert code == 3
    assert "prompts.jsonl:3: Refused" in stderr
    assert not (tmp_path / "run").exists()


def test_keys_follow_the_params_not_the_spelling_and_repeats_of_a_random_seed_are_new_draws(tmp_path):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [
        {"prompt": "a", "steps": 20},  # the default steps: the same params as the next line
        {"steps": 20, "prompt": "a", "cfg_scale": 7.0},
        {"prompt": "a", "seed": 5},
        {"prompt": "a", "seed": 5},
    ])
    first, second, fixed, fixed_again = read_batch(prompts)
    assert first.key != second.key and first.params.seed != second.params.seed  # two random draws
    assert fixed.key == fixed_again.key and fixed.params.seed == 5
    assert [i.key for i in read_batch(prompts)] == [i.key for i in (first, second, fixed, fixed_again)]

    out = tmp_path / "run"
    executor = FakeExecutor()
    report = run_batch(read_batch(prompts), out, executor)
    assert [r.status for r in report.rows] == ["done", "done", "done", "duplicate"]
    assert report.rows[3].error == "same image as line 3" and report.rows[3].files == (f"{fixed.key}.png",)
    assert executor.ran == [first.key, second.key, fixed.key]


def test_the_summary_is_kept_as_it_goes(tmp_path):
    items = read_batch(write_jsonl(tmp_path / "p.jsonl", [{"prompt": f"p{i}"} for i in range(3)]))
    out = tmp_path / "run"
    seen: list[list[str]] = []

    class Watching(FakeExecutor):
        def outcomes(self, requests):
            for outcome in super().outcomes(requests):
                seen.append([r["status"] for r in read_summary(out)])
                yield outcome

    run_batch(items, out, Watching(), summary_every_s=0)
    assert seen == [["pending"] * 3, ["done", "pending", "pending"], ["done", "done", "pending"]]
    assert [r["status"] for r in read_summary(out)] == ["done"] * 3


def test_a_run_stopped_mid_write_leaves_no_half_file_and_the_next_run_goes_on(tmp_path, monkeypatch):
    items = read_batch(write_jsonl(tmp_path / "p.jsonl", [{"prompt": f"p{i}"} for i in range(3)]))
    out = tmp_path / "run"
    real_write = Path.write_bytes
    calls = []

    def write_half_then_stop(self: Path, data: bytes) -> int:
        calls.append(self)
        if len(calls) == 2:  # the second image: half of it, then the process is stopped
            real_write(self, data[: len(data) // 2])
            raise KeyboardInterrupt
        return real_write(self, data)

    monkeypatch.setattr(Path, "write_bytes", write_half_then_stop)
    with pytest.raises(KeyboardInterrupt):
        run_batch(items, out, FakeExecutor())
    monkeypatch.undo()
    assert list(pngs(out)) == [f"{items[0].key}.png"]
    assert hidden_leftovers(out) == []
    assert [r["status"] for r in read_summary(out)] == ["done", "pending", "pending"]

    # What a process killed mid-write (SIGKILL) leaves: atomic_write's hidden temp folder.
    partial = out / f".{items[1].key}.png.0123456789ab.partial"
    partial.mkdir()
    (partial / f"{items[1].key}.png").write_bytes(fake_png("half").png[:20])
    executor = FakeExecutor()
    report = run_batch(items, out, executor)
    assert executor.ran == [items[1].key, items[2].key]
    assert [r.status for r in report.rows] == ["skipped", "done", "done"]
    assert hidden_leftovers(out) == []


def test_a_full_disk_stops_the_batch_keeping_what_is_done(tmp_path, monkeypatch):
    items = read_batch(write_jsonl(tmp_path / "p.jsonl", [{"prompt": f"p{i}"} for i in range(3)]))
    out = tmp_path / "run"
    real_write = Path.write_bytes

    def full_after_one(self: Path, data: bytes) -> int:
        if list(out.glob("*.png")):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(self, data)

    monkeypatch.setattr(Path, "write_bytes", full_after_one)
    executor = FakeExecutor()
    with pytest.raises(EmakiError, match="no space left on the disk; stopped"):
        run_batch(items, out, executor)
    assert len(executor.ran) == 2  # nothing more was made once the disk was full
    assert [r["status"] for r in read_summary(out)] == ["done", "failed", "pending"]
    assert read_summary(out)[1]["error"].endswith("No space left on device")
    assert hidden_leftovers(out) == []


def test_a_cut_png_from_a_worker_is_failed_not_written(tmp_path):
    items = read_batch(write_jsonl(tmp_path / "p.jsonl", [{"prompt": "a"}]))

    class Cutting(FakeExecutor):
        def outcomes(self, requests):
            image = fake_png("a")
            yield JobOutcome(requests[0].key, images=[replace(image, png=image.png[:-5])])

    report = run_batch(items, tmp_path / "run", Cutting())
    assert report.rows[0].status == "failed" and "cut PNG" in report.rows[0].error
    assert pngs(tmp_path / "run") == {}


def test_a_second_batch_on_the_same_folder_is_refused(tmp_path):
    items = read_batch(write_jsonl(tmp_path / "p.jsonl", [{"prompt": "a"}]))
    with batch_lock(tmp_path / "run"), pytest.raises(EmakiError, match="another emaki batch"):
        run_batch(items, tmp_path / "run", FakeExecutor())


def test_a_killed_batch_process_leaves_whole_files_and_a_valid_summary(tmp_path, capsys):
    """A real `emaki batch` process killed with SIGKILL partway: every PNG there is whole, the
    summary parses, and the next run makes exactly the rest."""
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": f"item {i}", **TINY} for i in range(16)])
    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    process = subprocess.Popen([sys.executable, "-m", "emaki", "batch", str(prompts), "--out", str(out),
                                "--threads", "1"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120  # a hang guard, not a speed check
        while len(list(out.glob("*.png"))) < 2 and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert process.poll() is None, "the batch ended before it could be killed"
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(30)
    before = pngs(out)
    assert 2 <= len(before) < 16
    assert all(data.endswith(b"IEND\xaeB`\x82") for data in before.values())
    statuses = [r["status"] for r in read_summary(out)]
    assert len(statuses) == 16 and set(statuses) <= {"done", "pending"}

    code, stdout, stderr = run_cli(capsys, str(prompts), "--out", str(out), "--threads", "1")
    assert code == 0, stderr
    assert f"{16 - len(before)} done, {len(before)} already done" in stdout
    assert len(pngs(out)) == 16
    assert hidden_leftovers(out) == []


def test_the_local_executor_never_imports_ray(tmp_path):
    """Without --executor ray nothing of Ray loads: not by the command, not by the Ray executor's module."""
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "1girl", **TINY}])
    script = f"""
import sys
import emaki.jobs.ray_executor
from emaki.cli import main
try:
    main(["batch", {str(prompts)!r}, "--out", {str(tmp_path / "run")!r}, "--threads", "1"])
except SystemExit as stop:
    assert not stop.code, stop.code
print("ray" in sys.modules)
"""
    made = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert made.returncode == 0, made.stderr
    assert made.stdout.strip().splitlines()[-1] == "False"
    assert len(pngs(tmp_path / "run")) == 1
