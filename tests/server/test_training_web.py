"""The Train panel in a real browser (Debian's headless Chromium driven by Playwright) against a
real `emaki serve` on the demo model: a 3-image dataset trained to the end with a live loss
curve, a run cancelled midway, and the form's refusals."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from web_browser import WAIT_MS


@pytest.fixture
def faces(tmp_path: Path) -> Path:
    from emaki.demo.faces import FaceAttributes, draw_face

    folder = tmp_path / "faces"
    folder.mkdir()
    for i, hair in enumerate(["pink", "blue", "green"]):
        draw_face(FaceAttributes(hair, "long hair", "green", "smile", "white")).save(folder / f"{i}.png")
        (folder / f"{i}.txt").write_text(f"1girl, {hair} hair, long hair, smile")
    return folder


def curve_points(page: Any) -> int:
    points = page.locator("#train-loss-line").get_attribute("points") or ""
    return len(points.split())


def test_train_panel_trains_shows_the_curve_and_cancels(browser: Any, live_server: Any, faces: Path,
                                                         tmp_path: Path) -> None:
    from playwright.sync_api import expect

    from emaki.networks.embeddings import load_embedding
    from emaki.networks.hypernetworks import load_hypernetwork

    context = browser.new_context(viewport={"width": 1280, "height": 1400}, base_url=live_server.url)
    context.set_default_timeout(WAIT_MS)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        page.goto("/")
        expect(page.locator("#status")).to_have_text("Ready")
        page.locator("#tab-train").click()
        panel = page.get_by_role("region", name="Train")
        expect(panel).to_be_visible()
        # The form follows the kind: its fields, and its default learning rate as the placeholder.
        expect(panel.get_by_label("Learning rate")).to_have_attribute("placeholder", "0.005")
        expect(page.locator("#train-hypernetwork-fields")).to_be_hidden()
        assert "tags_filewords" in page.locator("#train-template option").all_text_contents()
        panel.get_by_label("Kind").select_option("hypernetwork")
        expect(panel.get_by_label("Learning rate")).to_have_attribute("placeholder", "0.00001")
        expect(panel.get_by_label("Layer structure")).to_be_visible()
        expect(panel.get_by_label("Init text")).to_be_hidden()
        panel.get_by_label("Kind").select_option("embedding")

        # Refusals: the page's own check, then the server's, in the error area; nothing starts.
        panel.get_by_role("button", name="Start training").click()
        expect(page.locator("#error")).to_contain_text("Name")
        panel.get_by_label("Name", exact=True).fill("webneko")
        panel.get_by_label("Dataset folder (a path on the server)").fill(str(faces / "missing"))
        panel.get_by_role("button", name="Start training").click()
        expect(page.locator("#error")).to_contain_text("is not a folder on the server")

        # A run to the end: the curve gets points, the file's path is shown.
        panel.get_by_label("Dataset folder (a path on the server)").fill(str(faces))
        panel.get_by_label("Steps", exact=True).fill("30")
        panel.get_by_label("Preview every").fill("10")
        panel.get_by_label("Vectors per token").fill("2")
        panel.get_by_label("Template").select_option("tags_filewords")
        with page.expect_request(lambda r: r.url.endswith("/api/train") and r.method == "POST") as posted:
            panel.get_by_role("button", name="Start training").click()
        body = posted.value.post_data_json
        assert body["kind"] == "embedding" and body["name"] == "webneko" and body["steps"] == 30
        assert body["num_vectors_per_token"] == 2 and body["template"] == "tags_filewords" and "learn_rate" not in body
        expect(page.locator("#error")).to_be_hidden()
        page.wait_for_function("window.emaki.trainFinished >= 1")
        expect(page.locator("#train-status")).to_have_text(re.compile(r"^Done at step 30/30"))
        path = live_server.home / "embeddings" / "webneko.pt"
        expect(page.locator("#train-result")).to_have_text(f"Saved: {path}")
        assert page.evaluate("window.emaki.trainEvents") >= 1 and curve_points(page) >= 1
        assert page.evaluate("window.emaki.trainPoints") == curve_points(page)
        expect(page.locator("#train-loss-max")).not_to_be_empty()
        expect(page.locator("#train-step-last")).to_have_text("30")  # the curve ends at the last step
        assert load_embedding(path).step == 30
        expect(panel.get_by_role("button", name="Start training")).to_be_enabled()
        page.screenshot(path=str(tmp_path / "train-done.png"), full_page=True)

        # A long run, cancelled once its curve has points: saved where it got to.
        panel.get_by_label("Kind").select_option("hypernetwork")
        panel.get_by_label("Name", exact=True).fill("webhyper")
        panel.get_by_label("Steps", exact=True).fill("100000")
        panel.get_by_label("Preview every").fill("0")
        panel.get_by_label("Activation").select_option("relu")
        events_before = page.evaluate("window.emaki.trainEvents")
        panel.get_by_role("button", name="Start training").click()
        page.wait_for_function(f"window.emaki.trainEvents > {events_before} + 1 && window.emaki.trainPoints >= 2")
        assert curve_points(page) >= 2
        expect(page.locator("#train-status")).to_contain_text("/100000, loss ")
        panel.get_by_role("button", name="Cancel").click()
        page.wait_for_function("window.emaki.trainFinished >= 2")
        expect(page.locator("#train-status")).to_have_text(re.compile(r"^Cancelled at step \d+/100000"))
        hyper_path = live_server.home / "hypernetworks" / "webhyper.pt"
        expect(page.locator("#train-result")).to_have_text(f"Saved: {hyper_path}")
        step = int(re.search(r"step (\d+)", page.locator("#train-status").inner_text()).group(1))  # type: ignore[union-attr]
        saved = load_hypernetwork(hyper_path)
        assert saved.step == step >= 2 and saved.activation_func == "relu"
        expect(page.locator("#error")).to_be_hidden()

        # A LoRA: its own fields, a kohya file in the LoRA folder.
        panel.get_by_label("Kind").select_option("lora")
        expect(panel.get_by_label("Rank", exact=True)).to_be_visible()
        expect(panel.get_by_label("Layer structure")).to_be_hidden()
        panel.get_by_label("Name", exact=True).fill("weblora")
        panel.get_by_label("Steps", exact=True).fill("4")
        panel.get_by_label("Rank", exact=True).fill("2")
        with page.expect_request(lambda r: r.url.endswith("/api/train") and r.method == "POST") as posted:
            panel.get_by_role("button", name="Start training").click()
        assert posted.value.post_data_json["kind"] == "lora" and posted.value.post_data_json["network_dim"] == 2
        page.wait_for_function("window.emaki.trainFinished >= 3")
        lora_path = live_server.home / "loras" / "weblora.safetensors"
        expect(page.locator("#train-result")).to_have_text(f"Saved: {lora_path}")
        assert lora_path.is_file()
        assert not errors, f"JavaScript errors on the page: {errors}"
    finally:
        context.close()
