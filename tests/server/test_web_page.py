"""The web page in a real browser (Debian's headless Chromium driven by Playwright) against a
real `emaki serve` on the demo model: token counter, generation with progress, gallery, "send
to prompt", PNG drop, error messages, interrupt, img2img from a gallery image, and sign-in when
the API wants credentials.
"""

from __future__ import annotations

import base64
import io
import os
import re
from pathlib import Path
from typing import Any

from PIL import Image
from PIL.PngImagePlugin import PngInfo
from web_browser import WAIT_MS, open_merge_tab_on_two_checkpoints

REPO = Path(__file__).resolve().parents[2]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PROMPT = "1girl, pink hair, green eyes, smile"
RED_PROMPT = "1girl, long hair, red hair, smile, white background"
GREEN_PROMPT = "1girl, long hair, green hair, smile, white background"
DROPPED_INFOTEXT = ("dropped prompt test\nNegative prompt: lowres, bad anatomy\n"
                    "Steps: 33, Sampler: Euler, Schedule type: Karras, CFG scale: 5.5, Seed: 4242, "
                    "Size: 64x48, Model: emaki-demo")


class Session:
    """One browser page on a server, with what it did that the test checks at the end."""

    def __init__(self, browser: Any, base_url: str, shots: Path, name: str, **context: Any) -> None:
        self.context = browser.new_context(viewport={"width": 1280, "height": 1000}, base_url=base_url, **context)
        self.context.set_default_timeout(WAIT_MS)
        self.page = self.context.new_page()
        self.base_url = base_url
        self.shots_dir = shots
        self.name = name
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.shots: list[Path] = []
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.on("request", lambda request: self.requests.append(request.url))

    def screenshot(self, step: str) -> None:
        """Into pytest's tmp dir, and into $EMAKI_TEST_ARTIFACTS (relative: to the repo) when set."""
        targets = [self.shots_dir]
        artifacts = os.environ.get("EMAKI_TEST_ARTIFACTS")
        if artifacts:
            targets.append(Path(artifacts) if Path(artifacts).is_absolute() else REPO / artifacts)
        data = self.page.screenshot(full_page=True)
        for folder in targets:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"web-{self.name}-{step}.png"
            path.write_bytes(data)
            self.shots.append(path)

    def check_clean(self) -> None:
        assert not self.errors, f"JavaScript errors on the page: {self.errors}"
        foreign = [url for url in self.requests if not url.startswith((self.base_url, "data:", "blob:"))]
        assert not foreign, f"the page fetched from elsewhere: {foreign}"
        assert self.shots
        for path in self.shots:
            data = path.read_bytes()
            assert data.startswith(PNG_SIGNATURE) and len(data) > 1000, f"bad screenshot {path}"

    def close(self) -> None:
        self.context.close()


def png_bytes(infotext: str | None, size: tuple[int, int] = (64, 48)) -> bytes:
    info = PngInfo()
    if infotext is not None:
        info.add_text("parameters", infotext)
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 120, 160)).save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


DROP_JS = """([data, name]) => {
  const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
  const transfer = new DataTransfer();
  transfer.items.add(new File([bytes], name, {type: "image/png"}));
  const target = document.getElementById("output");
  for (const type of ["dragenter", "dragover", "drop"]) {
    target.dispatchEvent(new DragEvent(type, {dataTransfer: transfer, bubbles: true, cancelable: true}));
  }
}"""


def test_page_generates_browses_and_reads_pngs(browser: Any, live_server: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    session = Session(browser, live_server.url, tmp_path / "screenshots", "main")
    page = session.page
    api = live_server.client()
    try:
        page.goto("/")
        expect(page.locator("#status")).to_have_text("Ready")
        assert page.locator("#model option").count() >= 1
        assert page.locator("#sampler").input_value() == "Euler a"
        assert page.locator("#scheduler").input_value() == "Automatic"

        # Token counter: counts what the server counts, and shows chunk breaks past 75 tokens.
        page.locator("#prompt").fill(PROMPT)
        expected = api.post("/api/tokens", json={"prompt": PROMPT}).json()
        assert expected["tokens"] > 0
        expect(page.locator("#prompt-tokens")).to_have_text(f"{expected['tokens']}/75")
        page.locator("#negative").fill(", ".join(["lowres"] * 60) + " BREAK bad anatomy")
        expect(page.locator("#negative-tokens")).to_contain_text("chunk 2")
        page.locator("#negative").fill("")
        expect(page.locator("#negative-tokens")).to_have_text("0/75")

        # Generate: enough steps and batches that several progress events (with previews) arrive.
        page.locator("#steps").fill("50")
        page.locator("#batch-count").fill("3")
        page.locator("#generate").click()
        expect(page.locator("#status")).to_have_text("Done")
        seen = page.evaluate("window.emaki")
        assert seen["progressEvents"] >= 1 and seen["previews"] >= 1 and seen["maxProgress"] > 0, seen
        assert page.locator("#progress").evaluate("el => el.value") == 1
        assert page.locator("#preview").get_attribute("src").startswith("data:image/png;base64,")
        expect(page.locator("#error")).to_be_hidden()

        # The gallery shows the three new images, loaded.
        gallery = api.get("/api/gallery").json()
        assert len(gallery) == 3 and all(row["prompt"] == PROMPT for row in gallery)
        items = page.locator("#gallery .item")
        expect(items).to_have_count(3)
        expect(page.locator("#results .item")).to_have_count(3)
        first = items.first
        assert first.locator("img").get_attribute("src") == gallery[0]["url"] + "?thumb=256"  # a thumbnail
        page.wait_for_function("[...document.querySelectorAll('#gallery img')]"
                               ".every(i => i.complete && i.naturalWidth == 64)")
        first.locator(".thumb").click()  # the lightbox: the image and its infotext
        expect(page.locator("#lightbox-infotext")).to_be_visible()
        expect(page.locator("#lightbox-infotext")).to_contain_text("Steps: 50")
        page.keyboard.press("Escape")
        expect(page.locator("#lightbox")).to_be_hidden()

        # "Reuse last" takes the seed of the finished job's first image.
        job = api.get(f"/api/jobs/{gallery[0]['job_id']}").json()
        page.locator("#reuse-seed").click()
        expect(page.locator("#seed")).to_have_value(str(job["images"][0]["seed"]))
        session.screenshot("generated")

        # "Send to prompt" puts the image's parameters back in a changed form.
        page.locator("#prompt").fill("something else")
        page.locator("#seed").fill("-1")
        page.locator("#steps").fill("5")
        first.locator(".send").click()
        expect(page.locator("#prompt")).to_have_value(PROMPT)
        expect(page.locator("#seed")).to_have_value(str(gallery[0]["seed"]))
        expect(page.locator("#steps")).to_have_value("50")
        expect(page.locator("#width")).to_have_value("64")

        # The gallery search filters by prompt text.
        page.locator("#gallery-search").fill("no such prompt anywhere")
        expect(items).to_have_count(0)
        page.locator("#gallery-search").fill("pink hair")
        expect(items).to_have_count(3)

        # A PNG dropped on the page fills the form with its parameters.
        page.evaluate(DROP_JS, [base64.b64encode(png_bytes(DROPPED_INFOTEXT)).decode(), "dropped.png"])
        expect(page.locator("#prompt")).to_have_value("dropped prompt test")
        expect(page.locator("#drop-overlay")).to_be_hidden()
        expect(page.locator("#negative")).to_have_value("lowres, bad anatomy")
        expect(page.locator("#seed")).to_have_value("4242")
        expect(page.locator("#steps")).to_have_value("33")
        expect(page.locator("#cfg")).to_have_value("5.5")
        expect(page.locator("#sampler")).to_have_value("Euler")
        expect(page.locator("#scheduler")).to_have_value("Karras")
        expect(page.locator("#width")).to_have_value("64")
        expect(page.locator("#height")).to_have_value("48")
        expect(page.locator("#prompt-tokens")).to_have_text(re.compile(r"^[1-9]\d*/75$"))
        expect(page.locator("#error")).to_be_hidden()
        expect(page.locator("#init-preview")).to_be_hidden()  # a drop reads parameters, nothing more
        session.screenshot("png-dropped")

        # ... and one without parameters, through the file input, says so.
        plain = tmp_path / "plain.png"
        plain.write_bytes(png_bytes(None))
        page.locator("#png-file").set_input_files(str(plain))
        expect(page.locator("#error")).to_be_visible()
        expect(page.locator("#error")).to_contain_text("no generation parameters")

        # Refusals and validation errors are shown, and nothing is queued.
        jobs_before = len(api.get("/api/jobs").json())
        page.locator("#prompt").fill("loli, nude")
        page.locator("#generate").click()
        expect(page.locator("#error")).to_contain_text("Refused")
        session.screenshot("refused")
        page.locator("#prompt").fill(PROMPT)
        page.locator("#width").fill("60")
        page.locator("#generate").click()
        expect(page.locator("#error")).to_contain_text("multiple of 8")
        assert len(api.get("/api/jobs").json()) == jobs_before

        # Interrupt stops a long job once it runs.
        page.locator("#width").fill("")
        page.locator("#height").fill("")
        page.locator("#steps").fill("1000")
        page.locator("#batch-count").fill("1")
        events_before = page.evaluate("window.emaki.progressEvents")
        page.locator("#generate").click()
        expect(page.locator("#error")).to_be_hidden()
        page.wait_for_function(f"window.emaki.progressEvents > {events_before}"
                               " && document.getElementById('progress').value > 0")
        page.locator("#interrupt").click()
        expect(page.locator("#status")).to_have_text(re.compile(r"^Job (interrupted|cancelled)$"))
        expect(page.locator("#generate")).to_be_enabled()
        expect(page.locator("#interrupt")).to_be_disabled()
        session.screenshot("interrupted")

        session.check_clean()
    finally:
        api.close()
        session.close()


def submit_and_finish(page: Any, finished_before: int) -> dict[str, Any]:
    """Clicks Generate; returns the JSON the page posted to /api/jobs once that job has ended."""
    from playwright.sync_api import expect

    with page.expect_request(lambda r: r.url.endswith("/api/jobs") and r.method == "POST") as request:
        page.locator("#generate").click()
    page.wait_for_function(f"window.emaki.finishedJobs > {finished_before}")
    expect(page.locator("#status")).to_have_text("Done")
    return request.value.post_data_json


def test_page_uses_a_generated_image_as_init_image(browser: Any, live_server: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    session = Session(browser, live_server.url, tmp_path / "screenshots", "img2img")
    page = session.page
    api = live_server.client()
    try:
        page.goto("/")
        expect(page.locator("#status")).to_have_text("Ready")
        preview, info = page.locator("#init-preview"), page.locator("#init-info")
        clear = page.locator("#init-clear")
        expect(preview).to_be_hidden()
        expect(clear).to_be_disabled()
        expect(page.locator("#denoise")).to_have_value("0.75")
        expect(page.locator("#resize-mode option")).to_have_count(3)
        page.locator("#tab-img2img").click()

        # An image file chosen in the form is shown, and "Clear" takes it back.
        picked = tmp_path / "picked.png"
        picked.write_bytes(png_bytes(None))
        page.locator("#init-file").set_input_files(str(picked))
        expect(preview).to_be_visible()
        expect(info).to_have_text("picked.png, 64×48")
        clear.click()
        expect(preview).to_be_hidden()
        expect(info).to_contain_text("text to image")

        # A face to start from (text to image: nothing img2img is sent).
        page.locator("#prompt").fill(RED_PROMPT)
        body = submit_and_finish(page, 0)
        assert not {"init_image", "denoising_strength", "resize_mode"} & body.keys(), body.keys()
        items = page.locator("#gallery .item")
        expect(items).to_have_count(1)
        expect(page.locator("#results .item .use-init")).to_have_count(1)
        red = api.get("/api/gallery").json()[0]
        assert "Denoising strength" not in red["infotext"]

        # "Use as init image" loads its bytes as the init image.
        items.first.locator(".use-init").click()
        expect(preview).to_be_visible()
        page.wait_for_function("(() => { const i = document.getElementById('init-preview');"
                               " return i.src.startsWith('data:image/png;base64,') && i.complete"
                               " && i.naturalWidth == 64; })()")
        expect(info).to_have_text(f"image {red['id']}, 64×64")
        expect(clear).to_be_enabled()

        # img2img with a low strength and a changed prompt.
        page.locator("#denoise").fill("0.3")
        expect(page.locator("#denoise-range")).to_have_value("0.3")
        page.locator("#prompt").fill(GREEN_PROMPT)
        body = submit_and_finish(page, 1)
        assert body["init_image"].startswith("data:image/png;base64,")
        assert body["denoising_strength"] == 0.3 and body["resize_mode"] == "just resize"
        expect(page.locator("#error")).to_be_hidden()
        expect(items).to_have_count(2)
        green = items.first
        expect(green.locator("figcaption")).to_have_text(GREEN_PROMPT)
        green.locator(".thumb").click()
        expect(page.locator("#lightbox-infotext")).to_contain_text("Denoising strength: 0.3")
        page.keyboard.press("Escape")
        newest = api.get("/api/gallery").json()[0]
        assert "Denoising strength: 0.3" in newest["infotext"]
        assert (newest["width"], newest["height"]) == (64, 64)  # the init image's size
        session.screenshot("img2img")

        # Cleared: plain text to image again.
        clear.click()
        expect(preview).to_be_hidden()
        expect(clear).to_be_disabled()
        body = submit_and_finish(page, 2)
        assert not {"init_image", "denoising_strength", "resize_mode"} & body.keys(), body.keys()
        expect(items).to_have_count(3)
        items.first.locator(".thumb").click()
        expect(page.locator("#lightbox-infotext")).to_be_visible()
        expect(page.locator("#lightbox-infotext")).not_to_contain_text("Denoising strength")
        page.keyboard.press("Escape")
        assert "Denoising strength" not in api.get("/api/gallery").json()[0]["infotext"]

        # "Send to prompt" on the img2img image brings its strength back, not its init image.
        page.locator("#denoise").fill("0.9")
        items.nth(1).locator(".send").click()
        expect(page.locator("#prompt")).to_have_value(GREEN_PROMPT)
        expect(page.locator("#denoise")).to_have_value("0.3")
        expect(preview).to_be_hidden()
        session.check_clean()
    finally:
        api.close()
        session.close()


def test_page_runs_hires_fix_and_sends_it_back(browser: Any, live_server: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    session = Session(browser, live_server.url, tmp_path / "screenshots", "hires")
    page = session.page
    api = live_server.client()
    try:
        page.goto("/")
        expect(page.locator("#status")).to_have_text("Ready")
        expect(page.locator("#hires")).not_to_be_checked()
        expect(page.locator("#hr-scale")).to_have_value("2")
        expect(page.locator("#hr-steps")).to_have_value("0")
        assert page.locator("#hr-upscaler").input_value() == "Latent"
        expect(page.locator("#hr-upscaler option")).to_have_count(9)

        # Hires fix with an init image is refused on the page; nothing is queued.
        picked = tmp_path / "picked.png"
        picked.write_bytes(png_bytes(None))
        page.locator("#tab-img2img").click()
        page.locator("#init-file").set_input_files(str(picked))
        expect(page.locator("#init-preview")).to_be_visible()
        page.locator("#hires").check()
        page.locator("#generate").click()
        expect(page.locator("#error")).to_contain_text("hires fix is for text-to-image; clear the init image")
        assert not api.get("/api/jobs").json()
        page.locator("#init-clear").click()
        page.locator("#tab-txt2img").click()

        # Text to image with the hires pass: 64x64 first, 96x96 after the 1.5x upscale.
        page.locator("#prompt").fill("1girl, pink hair")
        page.locator("#steps").fill("4")
        page.locator("#hr-scale").fill("1.5")
        page.locator("#hr-steps").fill("2")
        page.locator("#denoise").fill("0.5")
        body = submit_and_finish(page, 0)
        assert body["enable_hr"] is True and body["hr_scale"] == 1.5 and body["hr_upscaler"] == "Latent"
        assert body["hr_second_pass_steps"] == 2 and body["denoising_strength"] == 0.5
        assert "init_image" not in body
        expect(page.locator("#error")).to_be_hidden()
        newest = api.get("/api/gallery").json()[0]
        assert "Hires upscale: 1.5" in newest["infotext"] and "Denoising strength: 0.5" in newest["infotext"]
        item = page.locator("#gallery .item").first
        item.locator(".thumb").click()
        expect(page.locator("#lightbox-infotext")).to_contain_text("Hires upscale: 1.5")
        page.keyboard.press("Escape")
        page.wait_for_function("(() => { const i = document.querySelector('#gallery .item img');"
                               " return i && i.complete && i.naturalWidth == 96; })()")
        session.screenshot("hires")

        # Unchecked: none of the hires fields are sent.
        page.locator("#hires").uncheck()
        page.locator("#hr-scale").fill("3")
        body = submit_and_finish(page, 1)
        assert not {"enable_hr", "hr_scale", "hr_upscaler", "hr_second_pass_steps",
                    "denoising_strength"} & body.keys(), body.keys()

        # "Send to prompt" on the hires image turns the box back on with its settings.
        page.locator("#denoise").fill("0.9")
        page.locator("#gallery .item").nth(1).locator(".send").click()
        expect(page.locator("#hires")).to_be_checked()
        expect(page.locator("#hr-scale")).to_have_value("1.5")
        expect(page.locator("#hr-steps")).to_have_value("2")
        expect(page.locator("#denoise")).to_have_value("0.5")
        session.check_clean()
    finally:
        api.close()
        session.close()


def test_page_signs_in_once_and_polls_when_it_holds_credentials(
        browser: Any, server_factory: Any, tmp_path: Path, tiny_safetensors: Path) -> None:
    from playwright.sync_api import expect

    server = server_factory(["--api-auth", "mika:secret"], auth=("mika", "secret"))
    # The page itself needs the browser's sign-in (its dialog: Playwright answers it), and the
    # browser then sends those credentials with the page's own requests: one sign-in, no form.
    once = Session(browser, server.url, tmp_path / "screenshots", "auth-once",
                   http_credentials={"username": "mika", "password": "secret"})
    try:
        once.page.goto("/")
        expect(once.page.locator("#status")).to_have_text("Ready")
        once.page.locator("#prompt").fill(PROMPT)
        once.page.locator("#steps").fill("2")
        once.page.locator("#generate").click()
        expect(once.page.locator("#status")).to_have_text("Done")
        once.page.wait_for_function("(() => { const i = document.querySelector('#gallery img');"
                                    " return i && i.complete && i.naturalWidth > 0; })()")
        expect(once.page.locator("#login")).to_be_hidden()
        once.screenshot("signed-in-once")
        once.check_clean()
    finally:
        once.close()

    # Credentials the page holds itself (its form, kept for the tab's session) that the server no
    # longer takes: the page asks with its form, and then polls (EventSource cannot send them).
    session = Session(browser, server.url, tmp_path / "screenshots", "auth",
                      http_credentials={"username": "mika", "password": "secret"})
    page = session.page
    page.add_init_script("sessionStorage.getItem('emaki.auth') === null && "
                         "sessionStorage.setItem('emaki.auth', 'Basic ' + btoa('mika:old'))")
    try:
        page.goto("/")
        expect(page.locator("#login")).to_be_visible()
        expect(page.locator("#login-error")).to_contain_text("not accepted")
        page.locator("#login-user").fill("mika")
        page.locator("#login-password").fill("wrong")
        page.locator("#login-submit").click()
        expect(page.locator("#login-error")).to_contain_text("not accepted")
        session.screenshot("login")
        page.locator("#login-password").fill("secret")
        page.locator("#login-submit").click()
        expect(page.locator("#status")).to_have_text("Ready")
        expect(page.locator("#login")).to_be_hidden()

        # Without EventSource (it cannot send the header) the page polls the job to its end.
        page.locator("#prompt").fill(PROMPT)
        expect(page.locator("#prompt-tokens")).to_have_text(re.compile(r"^[1-9]\d*/75$"))
        page.locator("#steps").fill("30")
        page.locator("#generate").click()
        expect(page.locator("#status")).to_have_text("Done")
        expect(page.locator("#gallery .item")).to_have_count(2)  # and the first part's
        # Images are behind auth too: they are fetched with the header and shown as blob: URLs.
        page.wait_for_function("(() => { const i = document.querySelector('#gallery img'); return i"
                               " && i.src.startsWith('blob:') && i.complete && i.naturalWidth == 64; })()")
        assert not any(url.endswith("/events") for url in session.requests)
        # ... and so is "Use as init image".
        page.locator("#gallery .item .use-init").first.click()
        page.wait_for_function("(() => { const i = document.getElementById('init-preview'); return !i.hidden"
                               " && i.src.startsWith('data:image/png;base64,') && i.naturalWidth == 64; })()")
        expect(page.locator("#error")).to_be_hidden()

        # The credentials last for the tab's session.
        page.reload()
        expect(page.locator("#status")).to_have_text("Ready")
        expect(page.locator("#login")).to_be_hidden()
        expect(page.locator("#gallery .item")).to_have_count(2)  # and the first part's
        session.screenshot("signed-in")

        # The other panels' jobs are polled to their end too (a merge here).
        models = open_merge_tab_on_two_checkpoints(page, server, tiny_safetensors)
        page.locator("#merge-output").fill("mix.safetensors")
        page.locator("#merge-start").click()
        expect(page.locator("#merge-status")).to_have_text("Done: mix.safetensors")
        assert (models / "mix.safetensors").is_file()
        assert not any(url.endswith("/events") for url in session.requests)
        session.check_clean()
    finally:
        session.close()
