"""The Merge tab's Trace section in Chromium (Playwright) against a real `emaki serve`: two tiny
checkpoints and a weighted sum of them in the model folder; the page lists them, refuses a trace
with no candidate, runs one, and shows the estimate per block (the right parents, in the merge's
amounts) and the summary line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from parent_checkpoints import write_parents
from test_web_page import Session

from emaki.merge import InputRef, MergeRecipe, merge

ALPHA = 0.3


def make_models(folder: Path, tiny: Path) -> None:
    """`a` (the tiny model), `b` (every weight moved) and `mix` = 0.7·a + 0.3·b."""
    write_parents(tiny, folder, seed=11)
    recipe = MergeRecipe("weighted-sum", InputRef(str(folder / "a.safetensors")), InputRef(str(folder / "b.safetensors")),
                         alpha=ALPHA)
    merge(recipe, folder / "mix.safetensors")


def test_trace_shows_the_parents_of_a_merge(browser: Any, live_server: Any, tiny_safetensors: Path,
                                            tmp_path: Path) -> None:
    from playwright.sync_api import expect

    make_models(live_server.home / "models", tiny_safetensors)
    with live_server.client() as api:
        api.post("/sdapi/v1/refresh-checkpoints")
    session = Session(browser, live_server.url, tmp_path, "lineage", color_scheme="light")
    page = session.page
    try:
        page.goto("/")
        expect(page.locator("#status")).to_have_text("Ready")
        page.locator("#tab-merge").click()
        expect(page.locator("#lineage-title")).to_be_visible()
        expect(page.locator("#lineage-model option[value='mix']")).to_have_count(1)
        expect(page.locator("#lineage-candidates input[value='a']")).to_have_count(1)

        page.locator("#lineage-model").select_option("mix")
        page.locator("#lineage-start").click()  # no candidate ticked: said on the page, nothing queued
        expect(page.locator("#error")).to_contain_text("Candidates")

        page.locator("#lineage-candidates input[value='a']").check()
        page.locator("#lineage-candidates input[value='b']").check()
        with page.expect_request(lambda r: r.url.endswith("/api/lineage") and r.method == "POST") as request:
            page.locator("#lineage-start").click()
        assert request.value.post_data_json == {"model": "mix", "candidates": ["a", "b"], "nonnegative": False}
        page.wait_for_function("window.emaki.lineagesFinished > 0")
        expect(page.locator("#lineage-status")).to_have_text("Done")
        expect(page.locator("#error")).to_be_hidden()

        table = page.locator("#lineage-table")
        expect(table).to_be_visible()
        expect(table.locator("thead th")).to_have_text(["Block", "a", "b", "Residual"])
        rows = table.locator("tbody tr")
        assert rows.count() >= 3  # the UNet blocks the tiny model has, TE and VAE
        for i in range(rows.count()):
            row = rows.nth(i)
            block = row.get_attribute("data-block")
            a = float(row.locator("td[data-candidate='a']").inner_text())
            b = float(row.locator("td[data-candidate='b']").inner_text())
            assert abs(a - (1 - ALPHA)) < 2e-3 and abs(b - ALPHA) < 2e-3, (block, a, b)
        expect(table.locator("tbody tr[data-block='VAE']")).to_have_count(1)
        expect(page.locator("#lineage-summary li").first).to_contain_text("0.70·a + 0.30·b (residual")
        session.screenshot("trace")
        session.check_clean()
    finally:
        session.close()
