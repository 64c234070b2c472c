"""The tabbed web page in Chromium (Playwright) against one `emaki serve` on the demo model shared by
the module (64x64, few steps): every tab and its screenshot, the gallery's thumbnails, lightbox and
delete, Ctrl+Enter, a dropped PNG, tag autocomplete, the dark theme, the style editor and picker,
the X/Y/Z plot, settings, the speed options (and the Speed preset menu) and the models list."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from test_web_page import DROP_JS, Session, png_bytes
from web_browser import open_merge_tab_on_two_checkpoints

FAST = {"steps": 1, "width": 64, "height": 64, "sampler_name": "Euler a"}
TABS = {"txt2img": "#form", "img2img": "#init", "extras": "#extras-panel", "xyz": "#xyz-box",
        "train": "#train-panel", "styles": "#styles-panel", "merge": "#merge-panel", "models": "#models-panel",
        "settings": "#settings-panel"}
# Where each tab's own panel is shown: the generation form serves three tabs.
SHOWN_ON = {panel: {tab} for tab, panel in TABS.items()} | {"#form": {"txt2img", "img2img", "xyz"}}


@pytest.fixture(scope="module")
def session(browser: Any, module_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    shots = tmp_path_factory.mktemp("webui-shots")
    opened = Session(browser, module_server.url, shots, "webui", color_scheme="light")
    yield opened
    opened.close()


@pytest.fixture
def page(session: Session) -> Iterator[Any]:
    """The page, freshly loaded on the txt2img tab; no JavaScript error may happen in a test."""
    from playwright.sync_api import expect

    session.page.goto("/")
    session.page.evaluate("sessionStorage.removeItem('emaki.tab')")
    session.page.locator("#tab-txt2img").click()
    expect(session.page.locator("#status")).to_have_text("Ready")
    yield session.page
    assert not session.errors, f"JavaScript errors on the page: {session.errors}"


def make_images(server: Any, prompt: str, count: int) -> list[dict[str, Any]]:
    from job_waiting import wait_job

    with server.client() as api:
        job = api.post("/api/jobs", json={"prompt": prompt, "seed": 7, "n_iter": count, **FAST}).json()
        done = wait_job(api, job["id"])
    assert done["status"] == "done", done
    return done["images"]


def test_every_tab_shows_its_panel_only(page: Any, session: Session) -> None:
    from playwright.sync_api import expect

    for tab, panel in TABS.items():
        page.locator(f"#tab-{tab}").click()
        expect(page.locator(f"#tab-{tab}")).to_have_attribute("aria-selected", "true")
        expect(page.locator(panel)).to_be_visible()
        for other_panel, shown_on in SHOWN_ON.items():
            if tab not in shown_on:
                expect(page.locator(other_panel)).to_be_hidden()
        session.screenshot(f"tab-{tab}")
    page.reload()  # the tab is remembered for the browser tab's session
    expect(page.locator("#settings-panel")).to_be_visible()
    session.check_clean()


def test_gallery_thumbnails_lightbox_and_delete(page: Any, session: Session, module_server: Any) -> None:
    from playwright.sync_api import expect

    images = make_images(module_server, "1girl, lightbox test", 3)
    page.locator("#gallery-search").fill("lightbox test")
    items = page.locator("#gallery .item")
    expect(items).to_have_count(3)
    newest = sorted(images, key=lambda row: -row["id"])
    page.wait_for_function("[...document.querySelectorAll('#gallery img')].every(i => i.complete && i.naturalWidth == 64)")
    assert items.first.locator("img").get_attribute("src").endswith("?thumb=256")

    # The lightbox: the full image and its infotext; arrows walk the list; Esc closes.
    items.first.locator(".thumb").click()
    box, text = page.locator("#lightbox"), page.locator("#lightbox-infotext")
    expect(box).to_be_visible()
    expect(text).to_have_text(newest[0]["infotext"])
    expect(page.locator("#lightbox-image")).to_have_attribute("src", newest[0]["url"])
    expect(page.locator("#lightbox-prev")).to_be_disabled()
    page.keyboard.press("ArrowRight")
    expect(text).to_have_text(newest[1]["infotext"])
    page.keyboard.press("ArrowRight")
    expect(text).to_have_text(newest[2]["infotext"])
    expect(page.locator("#lightbox-next")).to_be_disabled()
    page.keyboard.press("ArrowLeft")
    expect(text).to_have_text(newest[1]["infotext"])
    session.screenshot("lightbox")
    page.keyboard.press("Escape")
    expect(box).to_be_hidden()

    # Delete (after the confirmation): gone from the page, the gallery and the disk.
    outputs = module_server.home / "outputs"
    files_before = len(list(outputs.rglob("*.png")))
    page.once("dialog", lambda dialog: dialog.accept())
    items.nth(1).locator(".delete").click()
    expect(items).to_have_count(2)
    with module_server.client() as api:
        assert api.get(newest[1]["url"]).status_code == 404
        assert newest[1]["id"] not in [row["id"] for row in api.get("/api/gallery").json()]
    assert len(list(outputs.rglob("*.png"))) == files_before - 1
    # ... from the lightbox too; a dismissed confirmation deletes nothing.
    items.first.locator(".thumb").click()
    page.once("dialog", lambda dialog: dialog.dismiss())
    page.locator("#lightbox-delete").click()
    expect(text).to_have_text(newest[0]["infotext"])
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator("#lightbox-delete").click()
    expect(text).to_have_text(newest[2]["infotext"])  # the next one is shown
    page.keyboard.press("Escape")
    expect(items).to_have_count(1)
    assert page.evaluate("window.emaki.deleted") == 2
    session.check_clean()


def test_ctrl_enter_generates_with_the_speed_options(page: Any, session: Session, module_server: Any) -> None:
    page.locator("#prompt").fill("1girl, ctrl enter")
    page.locator("#steps").fill("2")
    page.locator("#width").fill("64")
    page.locator("#height").fill("64")
    page.locator("#speed-box summary").click()
    page.locator("#tiling").check()
    page.locator("#gate-step").fill("1")
    finished = page.evaluate("window.emaki.finishedJobs")
    page.locator("#negative").click()
    with page.expect_request(lambda r: r.url.endswith("/api/jobs") and r.method == "POST") as request:
        page.keyboard.press("Control+Enter")
    body = request.value.post_data_json
    assert body["prompt"] == "1girl, ctrl enter" and body["tiling"] is True and body["gate_step"] == 1
    assert "cache_interval" not in body and "s_min_uncond" not in body  # off: the server's defaults
    page.wait_for_function(f"window.emaki.finishedJobs > {finished}")
    with module_server.client() as api:
        newest = api.get("/api/gallery?limit=1").json()[0]
    assert "Tiling: True" in newest["infotext"] and newest["prompt"] == "1girl, ctrl enter"


def test_the_speed_menu_fills_the_preset_and_follows_the_steps(page: Any, session: Session, module_server: Any) -> None:
    from playwright.sync_api import expect

    page.locator("#prompt").fill("1girl, speed preset")
    page.locator("#steps").fill("8")
    for box in ("width", "height"):
        page.locator(f"#{box}").fill("64")
    page.locator("#speed-box summary").click()
    page.locator("#speed").select_option("fast")
    expect(page.locator("#gate-step")).to_have_value("4")  # half of the steps, as `emaki generate --speed fast`
    expect(page.locator("#ngms")).to_have_value("4")
    expect(page.locator("#ngms-all")).to_be_checked()
    expect(page.locator("#token-merging")).to_have_value("0.5")
    session.screenshot("speed-fast")
    page.locator("#steps").fill("2")
    page.locator("#steps").press("Tab")
    expect(page.locator("#gate-step")).to_have_value("1")
    finished = page.evaluate("window.emaki.finishedJobs")
    with page.expect_request(lambda r: r.url.endswith("/api/jobs") and r.method == "POST") as request:
        page.locator("#generate").click()
    body = request.value.post_data_json
    assert body["speed"] == "fast" and body["s_min_uncond_all"] is True and body["gate_step"] == 1, body
    page.wait_for_function(f"window.emaki.finishedJobs > {finished}")
    with module_server.client() as api:
        newest = api.get("/api/gallery?limit=1").json()[0]
    assert newest["prompt"] == "1girl, speed preset"
    assert "NGMS all steps: True" in newest["infotext"] and "Token merging ratio: 0.5" in newest["infotext"]
    # A box edited by hand makes the choice custom: the boxes are sent as they are.
    page.locator("#token-merging").fill("0")
    expect(page.locator("#speed")).to_have_value("")
    page.locator("#speed").select_option("exact")
    expect(page.locator("#ngms-all")).not_to_be_checked()
    expect(page.locator("#gate-step")).to_have_value("0")


def test_the_hires_fix_sends_its_token_merging_ratio(page: Any, session: Session, module_server: Any) -> None:
    from playwright.sync_api import expect

    page.locator("#prompt").fill("1girl, hires merging")
    for box, value in (("steps", "1"), ("width", "64"), ("height", "64")):
        page.locator(f"#{box}").fill(value)
    page.locator("#hires").check()
    page.locator("#hr-token-merging").fill("0.3")
    finished = page.evaluate("window.emaki.finishedJobs")
    with page.expect_request(lambda r: r.url.endswith("/api/jobs") and r.method == "POST") as request:
        page.locator("#generate").click()
    assert request.value.post_data_json["token_merging_ratio_hr"] == 0.3
    page.wait_for_function(f"window.emaki.finishedJobs > {finished}")
    with module_server.client() as api:
        newest = api.get("/api/gallery?limit=1").json()[0]
    assert "Token merging ratio hr: 0.3" in newest["infotext"]
    # ... and a dropped PNG puts it back
    page.locator("#hr-token-merging").fill("0")
    page.locator("#hires").uncheck()
    page.evaluate(DROP_JS, [base64.b64encode(png_bytes(newest["infotext"])).decode(), "hires.png"])
    expect(page.locator("#hires")).to_be_checked()
    expect(page.locator("#hr-token-merging")).to_have_value("0.3")


def test_dropped_png_restores_the_settings(page: Any, session: Session) -> None:
    from playwright.sync_api import expect

    infotext = ("dropped on the tabs\nNegative prompt: bad hands\nSteps: 17, Sampler: DPM++ 2M, Schedule type: Karras, "
                "CFG scale: 4.5, Seed: 31337, Size: 64x48, Model: emaki-demo, Tiling: True, NGMS: 2, "
                "NGMS all steps: True")
    page.evaluate(DROP_JS, [base64.b64encode(png_bytes(infotext)).decode(), "dropped.png"])
    expect(page.locator("#prompt")).to_have_value("dropped on the tabs")
    expect(page.locator("#negative")).to_have_value("bad hands")
    expect(page.locator("#seed")).to_have_value("31337")
    expect(page.locator("#steps")).to_have_value("17")
    expect(page.locator("#cfg")).to_have_value("4.5")
    expect(page.locator("#sampler")).to_have_value("DPM++ 2M")
    expect(page.locator("#scheduler")).to_have_value("Karras")
    expect(page.locator("#height")).to_have_value("48")
    expect(page.locator("#tiling")).to_be_checked()
    expect(page.locator("#ngms")).to_have_value("2")
    expect(page.locator("#ngms-all")).to_be_checked()
    expect(page.locator("#error")).to_be_hidden()


def test_tag_autocomplete_inserts_tags_with_spaces(page: Any, session: Session) -> None:
    from playwright.sync_api import expect

    prompt, suggestions = page.locator("#prompt"), page.locator("#tag-suggest")
    prompt.fill("")
    prompt.click()
    page.keyboard.type("1girl, long h")
    expect(suggestions).to_be_visible()
    expect(suggestions.locator("li").first).to_have_attribute("data-tag", "long_hair")
    session.screenshot("autocomplete")
    page.keyboard.press("Enter")
    expect(prompt).to_have_value("1girl, long hair, ")
    expect(suggestions).to_be_hidden()
    # Arrows choose, Tab inserts; brackets in a tag are escaped as A1111 reads them.
    page.keyboard.type("star_(sy")
    expect(suggestions).to_be_visible()
    expect(suggestions.locator("li")).to_have_count(1)
    page.keyboard.press("Tab")
    expect(prompt).to_have_value("1girl, long hair, star \\(symbol\\), ")
    page.keyboard.type("blu")
    expect(suggestions).to_be_visible()
    second = suggestions.locator("li").nth(1).get_attribute("data-tag")
    page.keyboard.press("ArrowDown")
    page.keyboard.press("Enter")
    expect(prompt).to_have_value(f"1girl, long hair, star \\(symbol\\), {second.replace('_', ' ')}, ")
    page.keyboard.type("zzzz")  # nothing matches: no list
    page.wait_for_timeout(400)
    expect(suggestions).to_be_hidden()
    assert page.evaluate("window.emaki.tagInserts") == 3


def test_dark_theme_toggle_is_remembered(page: Any, session: Session) -> None:
    from playwright.sync_api import expect

    root, toggle = page.locator("html"), page.locator("#theme-toggle")
    expect(root).to_have_attribute("data-theme", "light")  # the system's (the context is light)
    light = page.evaluate("getComputedStyle(document.body).backgroundColor")
    toggle.click()
    expect(root).to_have_attribute("data-theme", "dark")
    dark = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert dark != light
    page.reload()
    expect(root).to_have_attribute("data-theme", "dark")
    expect(toggle).to_have_text("Light theme")
    session.screenshot("dark")
    toggle.click()
    page.reload()
    expect(root).to_have_attribute("data-theme", "light")


def test_style_editor_round_trips_and_the_picker_sends_styles(page: Any, session: Session, module_server: Any) -> None:
    from playwright.sync_api import expect

    page.locator("#tab-styles").click()
    page.locator("#style-name").fill("Anime base")
    page.locator("#style-prompt").fill("masterpiece, {prompt}, anime")
    page.locator("#style-negative").fill("lowres")
    page.locator("#style-save").click()
    listed = page.locator("#style-list .style-item[data-name='Anime base']")
    expect(listed).to_have_count(1)
    with module_server.client() as api:
        assert api.get("/api/styles/Anime base").json() == {
            "name": "Anime base", "prompt": "masterpiece, {prompt}, anime", "negative_prompt": "lowres"}
    # Edit: a click loads it; saving replaces it.
    page.locator("#style-new").click()
    expect(page.locator("#style-name")).to_have_value("")
    listed.click()
    expect(page.locator("#style-prompt")).to_have_value("masterpiece, {prompt}, anime")
    page.locator("#style-prompt").fill("best quality, {prompt}")
    page.locator("#style-save").click()
    expect(page.locator("#style-info")).to_have_text("Saved Anime base")
    with module_server.client() as api:
        assert api.get("/api/styles/Anime base").json()["prompt"] == "best quality, {prompt}"
    session.screenshot("styles")

    # The picker under the prompt sends the ticked style with the job.
    page.locator("#tab-txt2img").click()
    page.locator("#style-box summary").click()
    page.locator("#style-picks input[value='Anime base']").check()
    page.locator("#prompt").fill("1girl")
    page.locator("#steps").fill("1")
    finished = page.evaluate("window.emaki.finishedJobs")
    with page.expect_request(lambda r: r.url.endswith("/api/jobs") and r.method == "POST") as request:
        page.locator("#generate").click()
    assert request.value.post_data_json["styles"] == ["Anime base"]
    page.wait_for_function(f"window.emaki.finishedJobs > {finished}")
    with module_server.client() as api:
        assert api.get("/api/gallery?limit=1").json()[0]["infotext"].startswith("best quality, 1girl\n")

    # Delete (confirmed): gone from the list, the picker and the server.
    page.locator("#tab-styles").click()
    listed.click()
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator("#style-delete").click()
    expect(listed).to_have_count(0)
    expect(page.locator("#style-picks input")).to_have_count(0)
    with module_server.client() as api:
        assert api.get("/api/styles/Anime base").status_code == 404


def test_xyz_tab_runs_a_2x1_grid_with_cell_progress(page: Any, session: Session, module_server: Any) -> None:
    from playwright.sync_api import expect

    page.locator("#tab-xyz").click()
    options = page.locator("#xyz-x-type option").evaluate_all("items => items.map(o => o.textContent)")
    assert options[0] == "Nothing" and {"Steps", "CFG Scale", "Sampler", "Prompt S/R"} <= set(options)
    page.locator("#prompt").fill("1girl, grid test")
    page.locator("#steps").fill("20")
    page.locator("#width").fill("64")
    page.locator("#height").fill("64")
    # A choice axis offers its names: "Fill" puts them all in the values box.
    expect(page.locator("#xyz-y-fill")).to_be_disabled()
    page.locator("#xyz-y-type").select_option("Sampler")
    page.locator("#xyz-y-fill").click()
    assert "Euler a" in page.locator("#xyz-y-values").input_value().split(", ")
    page.locator("#xyz-y-type").select_option("")  # back to Nothing: a 2x1 grid
    page.locator("#xyz-x-type").select_option("CFG Scale")
    page.locator("#xyz-x-values").fill("5, 9")
    expect(page.locator("#generate")).to_have_text("Generate grid")
    with page.expect_request(lambda r: r.url.endswith("/api/grid") and r.method == "POST") as request:
        page.locator("#generate").click()
    body = request.value.post_data_json
    assert body["x"] == {"axis": "CFG Scale", "values": "5, 9"} and body["params"]["prompt"] == "1girl, grid test"
    page.wait_for_function("window.emaki.grids > 0")
    expect(page.locator("#status")).to_have_text("Done")
    assert page.evaluate("window.emaki.gridCells") >= 1  # per-cell progress arrived
    grid = page.locator("#results .item img").first
    page.wait_for_function("(() => { const i = document.querySelector('#results .item img');"
                           " return i && i.complete && i.naturalWidth == 128 && i.naturalHeight > 64; })()")  # 2 cells, legend
    assert grid.get_attribute("src").endswith("?thumb=256")
    with module_server.client() as api:
        grids = api.get("/api/gallery", params={"q": "Script: X/Y/Z plot"}).json()
    assert len(grids) == 1 and 'X Type: CFG Scale, X Values: "5, 9"' in grids[0]["infotext"]
    assert page.locator("#results .item").first.get_attribute("data-image-id") == str(grids[0]["id"])
    session.screenshot("xyz")
    # No axis: refused on the page, nothing queued.
    page.locator("#xyz-x-values").fill("")
    page.locator("#generate").click()
    expect(page.locator("#error")).to_contain_text("choose an axis type")


def test_settings_read_and_write_the_options(page: Any, session: Session, module_server: Any) -> None:
    from playwright.sync_api import expect

    page.locator("#tab-settings").click()
    skip = page.locator("#opt-CLIP_stop_at_last_layers")
    expect(skip).to_have_value("1")
    expect(page.locator("#opt-randn_source")).to_have_value(re.compile("^(CPU|GPU|NV)$"))
    skip.fill("2")
    page.locator("#opt-eta_noise_seed_delta").fill("31337")
    page.locator("#settings-save").click()
    expect(page.locator("#settings-info")).to_have_text("Saved.")
    with module_server.client() as api:
        options = api.get("/sdapi/v1/options").json()
        assert options["CLIP_stop_at_last_layers"] == 2 and options["eta_noise_seed_delta"] == 31337
    page.reload()
    expect(skip).to_have_value("2")
    session.screenshot("settings")
    skip.fill("0")  # out of range: the server's message is shown, next to the field it names
    page.locator("#settings-save").click()
    expect(page.locator("#settings-info")).to_have_text("Not saved.")
    expect(page.locator("#error")).to_be_visible()
    expect(page.locator("#opt-CLIP_stop_at_last_layers ~ .option-error")).to_contain_text("greater than or equal to 1")
    with module_server.client() as api:  # leave the shared server as it was
        api.post("/sdapi/v1/options", json={"CLIP_stop_at_last_layers": 1, "eta_noise_seed_delta": 0})


def test_models_tab_lists_the_server_folders(page: Any, session: Session) -> None:
    from playwright.sync_api import expect

    page.locator("#tab-models").click()
    checkpoints = page.locator(".model-kind[data-kind='Checkpoints'] li")
    expect(checkpoints.filter(has_text="emaki-demo")).to_have_count(1)
    expect(page.locator(".model-kind[data-kind='Upscalers'] li[data-name='Lanczos']")).to_have_count(1)
    for kind in ("VAEs", "LoRAs", "Embeddings", "Hypernetworks"):
        expect(page.locator(f".model-kind[data-kind='{kind}'] h3")).to_contain_text(kind)
    session.screenshot("models")


def test_merge_tab_merges_two_checkpoints(page: Any, session: Session, module_server: Any,
                                         tiny_safetensors: Any) -> None:
    from playwright.sync_api import expect

    folder = open_merge_tab_on_two_checkpoints(page, module_server, tiny_safetensors)
    page.locator("#merge-alpha").fill("0.5")
    page.locator("#merge-start").click()  # no output name: said on the page, nothing queued
    expect(page.locator("#error")).to_contain_text("Output file")
    page.locator("#merge-output").fill("mix.safetensors")
    page.locator("#merge-blocks").fill(",".join(["0.5"] * 24))  # one short: the server's message, by the field
    page.locator("#merge-start").click()
    expect(page.locator("#merge-blocks-error")).to_contain_text("blocks")
    assert not (folder / "mix.safetensors").exists()
    page.locator("#merge-blocks-preset").select_option("input-b")  # B's input blocks, A's middle and output
    blocks = [1.0] * 12 + [0.0] * 13
    expect(page.locator("#merge-blocks")).to_have_value(",".join(["1"] * 12 + ["0"] * 13))
    with page.expect_request(lambda r: r.url.endswith("/api/merge") and r.method == "POST") as request:
        page.locator("#merge-start").click()
    assert request.value.post_data_json == {"models": ["a", "b"], "loras": [], "output": "mix.safetensors",
                                            "overwrite": False, "alpha": 0.5, "blocks": blocks}
    page.wait_for_function("window.emaki.mergesFinished > 0")
    expect(page.locator("#merge-status")).to_have_text("Done: mix.safetensors")
    expect(page.locator("#merge-blocks-error")).to_be_empty()
    expect(page.locator("#merge-recipe")).to_contain_text(f"blocks: [{','.join(['1'] * 12 + ['0'] * 13)}]")
    assert (folder / "mix.safetensors").is_file()
    from safetensors import safe_open

    with safe_open(folder / "mix.safetensors", "np") as merged:
        assert json.loads(merged.metadata()["emaki_merge_recipe"])["blocks"] == blocks
    expect(page.locator("#model option[value*='mix']")).to_have_count(1)  # the generation form lists it
    session.screenshot("merge")
    # The server's refusal (the file exists now) is shown.
    page.locator("#merge-start").click()
    expect(page.locator("#error")).to_contain_text("output")
    expect(page.locator("#merge-start")).to_be_enabled()


def test_settings_show_every_option_by_section_and_apply_only_changes(page: Any, module_server: Any) -> None:
    from playwright.sync_api import expect

    with module_server.client() as api:
        schema = api.get("/api/options/schema").json()
    assert len(schema) >= 325 and {"key", "type", "default", "section", "choices"} <= set(schema[0])
    page.locator("#tab-settings").click()
    expect(page.locator("#settings-form .option-row")).to_have_count(len(schema))
    expect(page.locator("#opt-randn_source option")).to_have_count(3)  # a select from the choices
    expect(page.locator("#opt-quicksettings_list")).to_have_value('["sd_model_checkpoint"]')  # a list: JSON
    page.locator("#settings-search").fill("save_tx")
    expect(page.locator("#opt-save_txt")).to_be_visible()
    expect(page.locator("#opt-samples_save")).to_be_hidden()
    expect(page.locator(".option-section:visible h3")).to_have_text(["Infotext"])  # A1111's section
    page.locator("#opt-save_txt").check()
    with page.expect_request(lambda r: r.url.endswith("/sdapi/v1/options") and r.method == "POST") as request:
        page.locator("#settings-save").click()
    assert request.value.post_data_json == {"save_txt": True}  # only what changed
    expect(page.locator("#settings-info")).to_have_text("Saved.")
    with module_server.client() as api:
        assert api.get("/sdapi/v1/options").json()["save_txt"] is True
    # A list of numbers where the server wants strings: its message, next to that field.
    page.locator("#settings-search").fill("quicksettings")
    page.locator("#opt-quicksettings_list").fill("[1]")
    page.locator("#settings-save").click()
    expect(page.locator("#opt-quicksettings_list ~ .option-error")).to_contain_text("expected a list of strings")
    page.locator("#opt-quicksettings_list").fill("[1")  # not JSON: said on the page, nothing sent
    page.locator("#settings-save").click()
    expect(page.locator("#opt-quicksettings_list ~ .option-error")).to_contain_text("JSON")
    with module_server.client() as api:  # leave the shared server as it was
        api.post("/sdapi/v1/options", json={"save_txt": False})
        assert api.get("/sdapi/v1/options").json()["quicksettings_list"] == ["sd_model_checkpoint"]
