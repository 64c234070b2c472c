"""Face restoration on the web page, in headless Chromium: the "Restore faces" checkbox is disabled
with a hint naming the files and the server's folder until both are there, then sends
`restore_faces` and the image's infotext says `Face restoration: GFPGAN`; the Extras panel's GFPGAN
visibility slider restores faces (after the upscale, or alone). The server runs in this process so
that its face detector and GFPGAN can be stand-ins (tests/faces/ tests the real ones)."""

from __future__ import annotations

import base64
import io
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from face_stand_ins import FACE_FILES, face_at, put_face_files, use_stand_ins
from PIL import Image
from test_web_page import Session

from emaki.faces import DetectedFace
from emaki.server import ServerSettings, create_app
from emaki.workspace import Workspace


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def face_in_the_middle(picture: Image.Image) -> list[DetectedFace]:
    """One face centred in the picture, its eyes a fifth of the shorter side apart."""
    width, height = picture.size
    size = min(width, height) / 640
    half = 320 * size
    box = (width / 2 - half, height / 2 - half, width / 2 + half, height / 2 + half)
    return [face_at(box, size, (width / 2, height / 2))]


@dataclass
class InProcessServer:
    url: str
    home: Path

    def put_face_files(self) -> Path:
        return put_face_files(self.home / "face-restorers", *FACE_FILES)

    def remove_face_files(self) -> None:
        for name in FACE_FILES:
            (self.home / "face-restorers" / name).unlink(missing_ok=True)


@pytest.fixture(scope="module")
def faces_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessServer]:
    """`emaki serve` in a thread, on the demo model; its detector finds a face in the middle of any
    picture and its "GFPGAN" inverts the colours."""
    import uvicorn

    home = tmp_path_factory.mktemp("faces-home")
    with pytest.MonkeyPatch.context() as patch:
        use_stand_ins(patch, face_in_the_middle)
        app = create_app(ServerSettings(workspace=Workspace(home), precision="fp32", threads=1))
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, name="faces-server", daemon=True)
        thread.start()
        deadline = time.monotonic() + 120  # a hang guard
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.05)
        try:
            yield InProcessServer(f"http://127.0.0.1:{port}", home)
        finally:
            server.should_exit = True
            thread.join(60)


@pytest.fixture
def session(browser: Any, faces_server: InProcessServer, tmp_path: Path) -> Iterator[Session]:
    opened = Session(browser, faces_server.url, tmp_path / "screenshots", "faces")
    yield opened
    opened.close()


def open_page(session: Session) -> Any:
    from playwright.sync_api import expect

    page = session.page
    page.goto("/")
    page.evaluate("sessionStorage.removeItem('emaki.tab')")
    page.locator("#tab-txt2img").click()
    expect(page.locator("#status")).to_have_text("Ready")
    return page


def data_url_pixels(url: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB")).astype(int)


def test_without_the_files_both_controls_are_disabled_naming_them(session: Session, faces_server: InProcessServer):
    from playwright.sync_api import expect

    faces_server.remove_face_files()
    page = open_page(session)
    expect(page.locator("#restore-faces")).to_be_disabled()
    expect(page.locator("#restore-faces")).not_to_be_checked()
    hint = page.locator("#restore-faces-hint")
    for part in (*FACE_FILES, str(faces_server.home / "face-restorers")):
        expect(hint).to_contain_text(part)
    with page.expect_request(lambda r: r.url.endswith("/api/jobs") and r.method == "POST") as request:
        page.locator("#prompt").fill("1girl")
        page.locator("#steps").fill("1")
        page.locator("#generate").click()
    assert "restore_faces" not in request.value.post_data_json
    page.locator("#tab-extras").click()
    expect(page.locator("#extras-gfpgan")).to_be_disabled()
    expect(page.locator("#extras-gfpgan-hint")).to_contain_text("detection_Resnet50_Final.pth")
    session.screenshot("no-files")
    session.check_clean()


def test_ticking_restore_faces_restores_them_and_says_so(session: Session, faces_server: InProcessServer):
    from playwright.sync_api import expect

    faces_server.put_face_files()
    page = open_page(session)
    expect(page.locator("#restore-faces")).to_be_enabled()
    expect(page.locator("#restore-faces-hint")).to_have_text("")
    page.locator("#prompt").fill("1girl, restored")
    for field, value in (("#steps", "2"), ("#width", "64"), ("#height", "64"), ("#seed", "5")):
        page.locator(field).fill(value)
    page.locator("#restore-faces").check()
    finished = page.evaluate("window.emaki.finishedJobs")
    with page.expect_request(lambda r: r.url.endswith("/api/jobs") and r.method == "POST") as request:
        page.locator("#generate").click()
    assert request.value.post_data_json["restore_faces"] is True
    page.wait_for_function(f"window.emaki.finishedJobs > {finished}")
    expect(page.locator("#error")).to_be_hidden()
    with httpx.Client(base_url=faces_server.url) as api:
        newest = api.get("/api/gallery?limit=1").json()[0]
    assert "Face restoration: GFPGAN" in newest["infotext"] and newest["prompt"] == "1girl, restored"

    # The image's parameters, sent back to the form, tick the box again.
    page.locator("#restore-faces").uncheck()
    page.locator("#results .item .thumb").first.click()
    expect(page.locator("#lightbox-infotext")).to_contain_text("Face restoration: GFPGAN")
    session.screenshot("restored")
    page.locator("#lightbox-send").click()
    expect(page.locator("#restore-faces")).to_be_checked()
    session.check_clean()


def test_extras_restore_faces_at_half_visibility(session: Session, faces_server: InProcessServer, tmp_path: Path):
    from playwright.sync_api import expect

    faces_server.put_face_files()
    rng = np.random.default_rng(0)
    source = np.kron(rng.integers(0, 256, (12, 16, 3)), np.ones((8, 8, 1))).astype(np.uint8)
    Image.fromarray(source, "RGB").save(tmp_path / "girl.png")
    page = open_page(session)
    page.locator("#tab-extras").click()
    expect(page.locator("#extras-gfpgan")).to_be_enabled()
    expect(page.locator("#extras-gfpgan-hint")).to_be_hidden()
    page.locator("#extras-file").set_input_files(str(tmp_path / "girl.png"))
    page.locator("#extras-gfpgan").fill("0.5")
    expect(page.locator("#extras-gfpgan-value")).to_have_text("0.5")
    nose = (52, 68)  # (row, column) in a block's middle, next to the face's nose
    half_inverted = (source[nose].astype(int) + 255 - source[nose]) / 2
    for upscaler, scale, info in (("None", "2", "GFPGAN visibility: 0.5"),
                                  ("Lanczos", "1", "Postprocess upscaler: Lanczos, GFPGAN visibility: 0.5")):
        done = page.evaluate("window.emaki.upscales")
        page.locator("#extras-upscaler").select_option(upscaler)
        page.locator("#extras-scale").fill(scale)
        with page.expect_request(lambda r: r.url.endswith("/api/upscale")) as request:
            page.locator("#extras-run").click()
        assert request.value.post_data_json["gfpgan_visibility"] == 0.5
        page.wait_for_function(f"window.emaki.upscales > {done}")
        expect(page.locator("#error")).to_be_hidden()
        expect(page.locator("#extras-info")).to_contain_text(info)
        result = data_url_pixels(page.locator("#extras-result").get_attribute("src"))
        assert result.shape == source.shape  # "None" does not upscale, whatever the scale says
        assert abs(result[nose] - half_inverted).max() <= 2
        assert (result[:4] == source[:4]).all()  # far from the face: untouched
    session.screenshot("extras")

    # None with the slider at 0 would do nothing: refused, not a silent copy.
    page.locator("#extras-gfpgan").fill("0")
    page.locator("#extras-upscaler").select_option("None")
    page.locator("#extras-run").click()
    expect(page.locator("#error")).to_contain_text("upscaler: None with gfpgan_visibility 0")
    session.check_clean()
