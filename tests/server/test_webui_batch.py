"""The Batch tab in Chromium against one `emaki serve` on the demo model (64x64, 2 steps): a JSONL
batch runs to the end with its progress shown, its summary.csv downloads, a bad line is refused
with the server's message, and running it again skips what is done; Cancel stops a running batch."""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_web_page import Session

FAST = {"steps": 2, "width": 64, "height": 64, "sampler_name": "Euler a"}
LINES = [FAST | {"prompt": "a red cube, batch tab", "seed": 1}, FAST | {"prompt": "a blue cube, batch tab", "seed": 2}]


@pytest.fixture(scope="module")
def session(browser: Any, module_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    opened = Session(browser, module_server.url, tmp_path_factory.mktemp("batch-shots"), "batch",
                     color_scheme="light")
    yield opened
    opened.close()


def test_a_batch_runs_reports_its_progress_and_summary_and_resumes(
        session: Session, module_server: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    page = session.page
    page.goto("/")
    expect(page.locator("#status")).to_have_text("Ready")
    page.locator("#tab-batch").click()
    expect(page.locator("#batch-panel")).to_be_visible()
    expect(page.locator("#form")).to_be_hidden()
    assert page.locator("#batch-jsonl").get_attribute("placeholder").count("\n") == 1  # two example lines

    # A bad line: nothing queued, the server's message names the line and the field.
    page.locator("#batch-name").fill("tab1")
    page.locator("#batch-jsonl").fill(json.dumps(LINES[0]) + "\n" + json.dumps(FAST | {"prompt": "x", "steps": 0}))
    page.locator("#batch-run").click()
    expect(page.locator("#error")).to_contain_text("jsonl:2.steps")
    expect(page.locator("#batch-queued")).to_have_text("Not queued.")
    expect(page.locator("#batch-summary")).to_be_hidden()

    # The lines from a .jsonl file: both run; the progress reaches 2/2 and the gallery is read again.
    batch_file = tmp_path / "cubes.jsonl"
    batch_file.write_text("".join(json.dumps(line) + "\n" for line in LINES))
    page.locator("#batch-file").set_input_files(str(batch_file))
    expect(page.locator("#batch-jsonl")).to_have_value(batch_file.read_text())
    with page.expect_request(lambda r: "/api/gallery" in r.url):
        page.locator("#batch-run").click()
        expect(page.locator("#batch-queued")).to_have_text("Queued 2 of 2.")
        page.wait_for_function("window.emaki.batchesFinished === 1")
    expect(page.locator("#error")).to_be_hidden()
    status = page.locator("#batch-status").text_content()
    assert status.startswith("2/2 done, 0 failed") and "items/s" in status, status
    assert page.locator("#batch-progress").evaluate("bar => bar.value") == 1
    expect(page.locator("#batch-run")).to_be_enabled()
    session.screenshot("done")

    # summary.csv: fetched by the page and saved as a download, one row per line.
    with page.expect_download() as download:
        page.locator("#batch-summary").click()
    assert download.value.suggested_filename == "tab1-summary.csv"
    rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
    assert [row["status"] for row in rows] == ["done", "done"]
    assert all((module_server.home / "outputs" / row["file"]).is_file() for row in rows)

    # The same batch again: nothing new is queued.
    page.locator("#batch-run").click()
    expect(page.locator("#batch-queued")).to_have_text("Queued 0 of 2; 2 skipped (already done or queued).")
    page.wait_for_function("window.emaki.batchesFinished === 2")
    assert page.locator("#batch-status").text_content().startswith("2/2 done")
    with module_server.client() as api:
        assert len(api.get("/api/gallery", params={"q": "batch tab"}).json()) == 2
    session.check_clean()


def test_cancel_stops_a_running_batch(session: Session, module_server: Any) -> None:
    from playwright.sync_api import expect

    page = session.page
    page.goto("/")
    expect(page.locator("#status")).to_have_text("Ready")
    page.locator("#tab-batch").click()
    expect(page.locator("#batch-cancel")).to_be_disabled()  # no batch being watched
    long = FAST | {"prompt": "a long cube, cancelled", "seed": 11, "steps": 400}  # one worker: the rest wait
    lines = [long, FAST | {"prompt": "a cube, cancelled", "seed": 12}, FAST | {"prompt": "a cube, cancelled", "seed": 13}]
    page.locator("#batch-name").fill("tab-cancel")
    page.locator("#batch-jsonl").fill("\n".join(json.dumps(line) for line in lines))
    finished = page.evaluate("window.emaki.batchesFinished")
    page.locator("#batch-run").click()
    expect(page.locator("#batch-queued")).to_have_text("Queued 3 of 3.")
    with module_server.client() as api:
        deadline = time.monotonic() + 60
        while api.get("/api/batch/tab-cancel").json()["running"] == 0:  # its first line is under way
            assert time.monotonic() < deadline
            time.sleep(0.05)

        page.locator("#batch-cancel").click()
        expect(page.locator("#batch-queued")).to_have_text("Cancelled 3 of 3; done items kept.")
        page.wait_for_function(f"window.emaki.batchesFinished === {finished + 1}")
        expect(page.locator("#batch-status")).to_have_text("0/3 done, 0 failed, 3 cancelled")  # no rate: none ran
        assert page.locator("#batch-progress").evaluate("bar => bar.value") == 1
        expect(page.locator("#batch-cancel")).to_be_disabled()
        expect(page.locator("#batch-run")).to_be_enabled()
        expect(page.locator("#error")).to_be_hidden()
        statuses = [job["status"] for job in api.get("/api/jobs", params={"limit": 1000}).json()
                    if "cancelled" in job["params"]["prompt"]]
        assert sorted(statuses) == ["cancelled", "cancelled", "interrupted"], statuses
    session.screenshot("cancelled")
    session.check_clean()
