"""The web page's inpaint mask painter and Extras panel in headless Chromium against a real
`emaki serve` on the demo model: paint a mask with the mouse over part of an uploaded image,
inpaint, check the unpainted pixels came back identical; upscale with Lanczos and with a tiny
ESRGAN file in the server's upscalers folder."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from test_web_page import Session
from upscalers.conftest import esrgan_state, write_model


def face_file(path: Path) -> Path:
    from emaki.demo.faces import FaceAttributes, draw_face

    draw_face(FaceAttributes("red", "long hair", "blue", "smile", "white")).resize((64, 64)).convert("RGB").save(path)
    return path


def data_url_image(url: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))


def test_page_paints_a_mask_and_inpaints_only_there(browser: Any, live_server: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    session = Session(browser, live_server.url, tmp_path / "screenshots", "inpaint")
    page = session.page
    api = live_server.client()
    init = face_file(tmp_path / "face.png")
    try:
        page.goto("/")
        expect(page.locator("#status")).to_have_text("Ready")
        expect(page.locator("#inpaint-box")).to_be_hidden()
        page.locator("#prompt").fill("1girl, blue hair")
        for field, value in (("#steps", "3"), ("#width", "64"), ("#height", "64"), ("#seed", "9")):
            page.locator(field).fill(value)
        page.locator("#tab-img2img").click()  # the init image and the mask painter are on the img2img tab
        page.locator("#init-file").set_input_files(str(init))
        expect(page.locator("#inpaint-box")).to_be_visible()
        page.locator("#inpaint").check()
        expect(page.locator("#mask-canvas")).to_be_visible()
        page.locator("#denoise").fill("1")
        page.locator("#mask-blur").fill("0")
        page.locator("#masked-content").select_option("2")  # latent noise: the painted part surely changes

        # Paint the right third of the picture with mouse strokes, top to bottom.
        box = page.locator("#mask-canvas").bounding_box()
        assert box is not None and box["width"] > 100  # shown larger than its 64 pixels
        page.locator("#mask-brush").fill("60")
        x = box["x"] + box["width"] * 0.85
        page.mouse.move(x, box["y"] + 2)
        page.mouse.down()
        for step in range(1, 11):
            page.mouse.move(x, box["y"] + box["height"] * step / 10, steps=2)
        page.mouse.up()
        assert page.evaluate("window.emaki.maskStrokes") > 5
        mask = np.asarray(data_url_image(page.evaluate("window.emaki.maskDataUrl()")).convert("L"))
        assert mask.shape == (64, 64) and mask[:, :40].max() == 0 and mask[:, 52:57].min() == 255
        session.screenshot("painted")

        # Eraser, invert and clear act on the canvas.
        page.locator("#mask-invert").click()
        inverted = np.asarray(data_url_image(page.evaluate("window.emaki.maskDataUrl()")).convert("L"))
        assert inverted[:, :40].min() == 255 and inverted[:, 52:57].max() == 0
        page.locator("#mask-invert").click()

        page.locator("#generate").click()
        expect(page.locator("#status")).to_have_text("Done")
        expect(page.locator("#error")).to_be_hidden()
        gallery = api.get("/api/gallery").json()
        assert len(gallery) == 1
        result = np.asarray(Image.open(io.BytesIO(api.get(gallery[0]["url"]).content)).convert("RGB"))
        original = np.asarray(Image.open(init).convert("RGB"))
        assert np.array_equal(result[:, :36], original[:, :36])  # unpainted: identical
        assert not np.array_equal(result[:, 52:], original[:, 52:])  # painted: redrawn
        assert "Masked content: latent noise" in gallery[0]["infotext"]

        page.locator("#mask-clear").click()
        assert np.asarray(data_url_image(page.evaluate("window.emaki.maskDataUrl()")).convert("L")).max() == 0
        page.locator("#init-clear").click()
        expect(page.locator("#inpaint-box")).to_be_hidden()
        session.screenshot("done")
        session.check_clean()
    finally:
        session.close()


def test_page_extras_upscales_with_lanczos_and_a_model(browser: Any, live_server: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    write_model(esrgan_state(), live_server.home / "upscalers" / "4x-Tiny.safetensors")
    session = Session(browser, live_server.url, tmp_path / "screenshots", "extras")
    page = session.page
    picture = tmp_path / "small.png"
    Image.new("RGB", (24, 16), (30, 160, 90)).save(picture)
    try:
        page.goto("/")
        expect(page.locator("#status")).to_have_text("Ready")
        page.locator("#tab-extras").click()
        options = page.locator("#extras-upscaler option").evaluate_all("items => items.map(o => o.value)")
        assert options[:2] == ["Lanczos", "Nearest"] and "4x-Tiny" in options
        assert "4x-Tiny" in page.locator("#hr-upscaler option").evaluate_all("items => items.map(o => o.value)")
        expect(page.locator("#extras-run")).to_be_disabled()
        page.locator("#extras-file").set_input_files(str(picture))

        for upscaler, scale, size in (("Lanczos", "2", (48, 32)), ("4x-Tiny", "3", (72, 48))):
            done = page.evaluate("window.emaki.upscales")
            page.locator("#extras-upscaler").select_option(upscaler)
            page.locator("#extras-scale").fill(scale)
            page.locator("#extras-run").click()
            page.wait_for_function(f"window.emaki.upscales > {done}")
            expect(page.locator("#error")).to_be_hidden()
            src = page.locator("#extras-result").get_attribute("src")
            assert data_url_image(src).size == size
            assert page.locator("#extras-download").get_attribute("href") == src
            expect(page.locator("#extras-info")).to_contain_text(f"Postprocess upscaler: {upscaler}")

        with page.expect_download() as download_info:
            page.locator("#extras-download").click()
        download = download_info.value
        saved = tmp_path / "downloaded.png"
        download.save_as(saved)
        assert download.suggested_filename == "small-upscaled.png" and Image.open(saved).size == (72, 48)
        session.screenshot("upscaled")
        session.check_clean()
    finally:
        session.close()
