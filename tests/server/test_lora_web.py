"""The LoRA picker in a real browser (Debian's headless Chromium driven by Playwright) against a
real `emaki serve` on the demo model: listed after a refresh, trigger words on hover, a click
puts `<lora:ALIAS:1>` at the prompt's cursor (or its end), and the image made with the tags
records `Lora hashes`."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tiny_lora import write_tiny_lora
from web_browser import WAIT_MS

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_lora_picker_inserts_tags_that_generate_with_lora_hashes(browser: Any, live_server: Any,
                                                                 tmp_path: Path) -> None:
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1280, "height": 1000}, base_url=live_server.url)
    context.set_default_timeout(WAIT_MS)
    page = context.new_page()
    errors: list[str] = []
    requests: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("request", lambda request: requests.append(request.url))
    api = live_server.client()
    try:
        page.goto("/")
        expect(page.locator("#status")).to_have_text("Ready")
        expect(page.locator("#lora-empty")).to_be_visible()  # none yet
        expect(page.locator("#lora-list .lora")).to_have_count(0)

        folder = live_server.home / "loras"
        write_tiny_lora(folder / "style.safetensors", alias="style-v1", tags={"silver hair": 7, "1girl": 9})
        write_tiny_lora(folder / "plain.safetensors", seed=3)
        page.locator("#lora-refresh").click()
        chips = page.locator("#lora-list .lora")
        expect(chips).to_have_count(2)
        expect(page.locator("#lora-empty")).to_be_hidden()
        expect(page.locator("#lora-count")).to_have_text("(2)")
        style = page.locator("#lora-list .lora[data-name='style']")
        plain = page.locator("#lora-list .lora[data-name='plain']")
        expect(style).to_have_text("stylestyle-v1")  # the file name, then its alias
        title = style.get_attribute("title") or ""
        assert "<lora:style-v1:1>" in title and "Trigger words: 1girl, silver hair" in title, title

        # Filtering by a trigger word.
        page.locator("#lora-filter").fill("silver")
        expect(chips).to_have_count(1)
        page.locator("#lora-filter").fill("")
        expect(chips).to_have_count(2)

        # A click adds the alias with multiplier 1 at the end of a prompt that was only filled in...
        page.locator("#prompt").fill("1girl, smile")
        style.click()
        expect(page.locator("#prompt")).to_have_value("1girl, smile <lora:style-v1:1>")
        expect(page.locator("#prompt")).to_be_focused()
        # ... and at the cursor once there is one.
        page.locator("#prompt").evaluate("el => el.setSelectionRange(6, 6)")
        plain.click()
        expect(page.locator("#prompt")).to_have_value("1girl, <lora:plain:1> smile <lora:style-v1:1>")
        expect(page.locator("#prompt-tokens")).to_have_text(re.compile(r"^[1-9]\d*/75$"))

        # Generating with the inserted tags: the image records both LoRAs.
        page.locator("#steps").fill("3")
        page.locator("#seed").fill("21")
        page.locator("#generate").click()
        expect(page.locator("#status")).to_have_text("Done")
        expect(page.locator("#error")).to_be_hidden()
        [image] = api.get("/api/gallery").json()
        assert image["prompt"] == "1girl, <lora:plain:1> smile <lora:style-v1:1>"
        assert re.search(r'Lora hashes: "plain: [0-9a-f]{12}, style-v1: [0-9a-f]{12}"', image["infotext"]), \
            image["infotext"]
        expect(page.locator("#results .item")).to_have_count(1)
        shot = page.screenshot(full_page=True)
        (tmp_path / "web-loras.png").write_bytes(shot)
        assert shot.startswith(PNG_SIGNATURE) and len(shot) > 1000

        assert not errors, f"JavaScript errors on the page: {errors}"
        foreign = [url for url in requests if not url.startswith((live_server.url, "data:", "blob:"))]
        assert not foreign, f"the page fetched from elsewhere: {foreign}"
    finally:
        api.close()
        context.close()
