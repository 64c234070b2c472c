"""The server in-process (FastAPI's TestClient, real worker thread, demo model)."""

from __future__ import annotations

import base64
import io
import json
import os
import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from job_waiting import wait_job
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from emaki.server import ServerSettings, create_app
from emaki.workspace import default_home

FAST = {"steps": 3, "width": 64, "height": 64, "sampler_name": "Euler a"}


@pytest.fixture
def client() -> Iterator[TestClient]:
    with TestClient(create_app(ServerSettings())) as test_client:
        yield test_client


def png_with_parameters(text: str) -> str:
    info = PngInfo()
    info.add_text("parameters", text)
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="PNG", pnginfo=info)
    return base64.b64encode(buffer.getvalue()).decode()


def test_txt2img_returns_pngs_with_infotext_and_info_as_json_string(client: TestClient) -> None:
    response = client.post("/sdapi/v1/txt2img", json={"prompt": "1girl, red hair", "seed": 7, "batch_size": 2,
                                                      "some_future_field": {"x": 1}, **FAST})
    assert response.status_code == 200, response.text
    body = response.json()
    info = json.loads(body["info"])  # a JSON *string*, as A1111 clients expect
    assert info["all_seeds"] == [7, 8] and info["seed"] == 7
    assert info["sd_model_name"] == "emaki-demo" and info["sampler_name"] == "Euler a"
    assert body["parameters"]["prompt"] == "1girl, red hair" and body["parameters"]["steps"] == 3
    images = [Image.open(io.BytesIO(base64.b64decode(b))) for b in body["images"]]
    assert [im.size for im in images] == [(64, 64), (64, 64)]
    assert images[1].info["parameters"] == info["infotexts"][1]
    assert "Seed: 8" in info["infotexts"][1]
    # save_images defaults to false: nothing lands in the gallery
    assert client.get("/api/gallery").json() == []


def test_txt2img_defaults_follow_a1111(client: TestClient) -> None:
    """No sampler given: A1111's API default is `sampler_index` "Euler"; options fill clip skip."""
    client.post("/sdapi/v1/options", json={"CLIP_stop_at_last_layers": 2})
    body = client.post("/sdapi/v1/txt2img", json={"prompt": "1girl", "steps": 2, "width": 64, "height": 64,
                                                  "seed": 1, "save_images": True}).json()
    info = json.loads(body["info"])
    assert info["sampler_name"] == "Euler" and info["clip_skip"] == 2
    assert "Clip skip: 2" in info["infotexts"][0]
    gallery = client.get("/api/gallery").json()
    assert len(gallery) == 1 and gallery[0]["seed"] == 1
    assert (default_home(os.environ) / "outputs").exists()


def test_same_seed_same_image_through_the_api(client: TestClient) -> None:
    payload = {"prompt": "1girl, blue hair", "seed": 42, **FAST}
    first = client.post("/sdapi/v1/txt2img", json=payload).json()["images"][0]
    second = client.post("/sdapi/v1/txt2img", json=payload).json()["images"][0]
    assert first == second


def test_override_settings_and_infotext_field(client: TestClient) -> None:
    body = client.post("/sdapi/v1/txt2img", json={
        "prompt": "1girl", "seed": 3, **FAST, "override_settings": {"eta_noise_seed_delta": 31337}}).json()
    assert "ENSD: 31337" in json.loads(body["info"])["infotexts"][0]
    # `infotext` fills what the request leaves unset
    text = "1girl, green hair\nSteps: 2, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 5, Seed: 99, Size: 64x64"
    info = json.loads(client.post("/sdapi/v1/txt2img", json={"infotext": text}).json()["info"])
    assert (info["prompt"], info["seed"], info["steps"], info["cfg_scale"]) == ("1girl, green hair", 99, 2, 5.0)
    assert "Sampler: DPM++ 2M, Schedule type: Karras" in info["infotexts"][0]
    # options are not changed by an override
    assert client.get("/sdapi/v1/options").json()["eta_noise_seed_delta"] == 0


def test_unsupported_features_are_refused_not_ignored(client: TestClient) -> None:
    response = client.post("/sdapi/v1/txt2img", json={"prompt": "1girl", "restore_faces": True, **FAST})
    assert response.status_code == 422 and "restore_faces" in response.text
    assert client.post("/sdapi/v1/interrogate", json={}).status_code == 404


def test_policy_refusal_is_400_with_reason_and_queues_nothing(client: TestClient) -> None:
    for path in ("/sdapi/v1/txt2img", "/api/jobs"):
        response = client.post(path, json={"prompt": "loli, nude", "steps": 2})
        assert response.status_code == 400
        assert response.json()["error"] == "PolicyViolation" and "minor" in response.json()["detail"]
    assert client.get("/api/jobs").json() == []


def test_invalid_fields_are_422_naming_the_field(client: TestClient) -> None:
    response = client.post("/api/jobs", json={"prompt": "x", "steps": 0})
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["body", "steps"]
    response = client.post("/api/jobs", json={"prompt": "x", "no_such_field": 1})
    assert response.status_code == 422 and "no_such_field" in response.text
    response = client.post("/sdapi/v1/txt2img", json={"prompt": "x", "sampler_name": "Nope", "steps": 1})
    assert response.status_code in (400, 422) and "Nope" in response.text
    response = client.post("/sdapi/v1/options", json={"CLIP_stop_at_last_layers": "many"})
    assert response.status_code == 422 and "CLIP_stop_at_last_layers" in response.text


@pytest.mark.parametrize("field, value", [
    ("model", "../../etc/passwd"), ("model", "/etc/passwd"), ("vae", "../x.pt"), ("hypernetwork", "..\\evil"),
    ("model", "no-such-model"),
])
def test_names_never_reach_outside_the_folders(client: TestClient, field: str, value: str) -> None:
    response = client.post("/api/jobs", json={"prompt": "x", field: value})
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "NameNotAllowed" and field in response.json()["detail"]


def test_hypernetwork_tag_paths_are_refused(client: TestClient) -> None:
    response = client.post("/sdapi/v1/txt2img", json={"prompt": "1girl <hypernet:../../secret:1>", "steps": 1})
    assert response.status_code == 400 and "path" in response.json()["detail"]
    response = client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "../../x.safetensors"})
    assert response.status_code == 400


def test_oversized_body_is_413() -> None:
    with TestClient(create_app(ServerSettings(max_body_bytes=1000))) as small:
        response = small.post("/sdapi/v1/png-info", json={"image": "A" * 5000})
        assert response.status_code == 413


def test_png_info_reads_parameters(client: TestClient) -> None:
    text = "a cat\nNegative prompt: dog\nSteps: 33, Sampler: Euler a, CFG scale: 6, Seed: 4242, Size: 64x64"
    body = client.post("/sdapi/v1/png-info", json={"image": "data:image/png;base64," + png_with_parameters(text)})
    assert body.status_code == 200
    assert body.json()["info"] == text
    assert body.json()["parameters"]["Seed"] == "4242" and body.json()["parameters"]["Negative prompt"] == "dog"
    native = client.post("/api/png-info", json={"image": png_with_parameters(text)}).json()
    assert native["params"]["seed"] == 4242 and native["params"]["steps"] == 33
    bad = client.post("/sdapi/v1/png-info", json={"image": "not base64!"})
    assert bad.status_code == 422 and bad.json()["detail"].startswith("image:")


def test_listing_endpoints(client: TestClient) -> None:
    models = client.get("/sdapi/v1/sd-models").json()
    assert models[0]["model_name"] == "emaki-demo" and models[0]["title"].startswith("emaki-demo.safetensors [")
    assert len(models[0]["hash"]) == 10 and len(models[0]["sha256"]) == 64
    names = [s["name"] for s in client.get("/sdapi/v1/samplers").json()]
    assert {"Euler a", "DPM++ 2M", "DDIM"} <= set(names)
    labels = [s["label"] for s in client.get("/sdapi/v1/schedulers").json()]
    assert labels[0] == "Automatic" and "Karras" in labels
    assert client.get("/sdapi/v1/scripts").json() == {"txt2img": ["x/y/z plot"], "img2img": ["sd upscale", "x/y/z plot"]}
    assert client.get("/sdapi/v1/hypernetworks").json() == []
    assert client.get("/sdapi/v1/embeddings").json() == {"loaded": {}, "skipped": {}}
    assert client.get("/sdapi/v1/memory").json()["ram"]["total"] > 0
    assert client.post("/sdapi/v1/refresh-checkpoints").status_code == 200
    assert "/sdapi/v1/txt2img" in client.get("/openapi.json").json()["paths"]


def test_options_round_trip_and_persist() -> None:
    with TestClient(create_app(ServerSettings())) as first:
        title = first.get("/sdapi/v1/sd-models").json()[0]["title"]
        assert first.post("/sdapi/v1/options", json={"sd_model_checkpoint": title, "eta_noise_seed_delta": 31337,
                                                     "not_an_emaki_setting": 5}).status_code == 422
        assert first.post("/sdapi/v1/options", json={"sd_model_checkpoint": title,
                                                     "eta_noise_seed_delta": 31337}).status_code == 200
        assert first.post("/sdapi/v1/options", json={"sd_model_checkpoint": "missing.ckpt"}).status_code == 400
    with TestClient(create_app(ServerSettings())) as second:
        options = second.get("/sdapi/v1/options").json()
        assert options["sd_model_checkpoint"] == title and options["eta_noise_seed_delta"] == 31337
        assert "not_an_emaki_setting" not in options


def test_native_job_lifecycle_gallery_and_search(client: TestClient) -> None:
    red = client.post("/api/jobs", json={"prompt": "1girl, red hair", "seed": 1, **FAST})
    blue = client.post("/api/jobs", json={"prompt": "1girl, blue hair", "negative_prompt": "hat", "seed": 2,
                                          "n_iter": 2, **FAST})
    assert red.status_code == blue.status_code == 202
    red_job, blue_job = wait_job(client, red.json()["id"]), wait_job(client, blue.json()["id"])
    assert red_job["status"] == blue_job["status"] == "done"
    assert [image["seed"] for image in blue_job["images"]] == [2, 3]
    listed = {job["id"]: job for job in client.get("/api/jobs").json()}
    assert [image["seed"] for image in listed[blue_job["id"]]["images"]] == [2, 3]
    assert len(client.get("/api/gallery").json()) == 3
    assert [row["seed"] for row in client.get("/api/gallery", params={"q": "RED hair"}).json()] == [1]
    assert len(client.get("/api/gallery", params={"q": "hat"}).json()) == 2  # negative prompt matches too
    assert client.get("/api/gallery", params={"model": "other"}).json() == []
    assert client.get("/api/gallery", params={"since": time.time() + 60}).json() == []
    image = red_job["images"][0]
    png = client.get(image["url"])
    assert png.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(png.content)).info["parameters"] == image["infotext"]
    params = client.get(f"{image['url']}/params").json()["params"]
    assert params["prompt"] == "1girl, red hair" and params["seed"] == 1 and params["steps"] == 3
    assert client.get("/api/images/999").status_code == 404
    assert client.get("/api/jobs/nope").status_code == 404


def test_cancel_queued_job_and_interrupt_running_one(client: TestClient) -> None:
    long = client.post("/api/jobs", json={"prompt": "1girl", "steps": 400, **{k: v for k, v in FAST.items()
                                                                           if k != "steps"}}).json()
    queued = client.post("/api/jobs", json={"prompt": "1girl", **FAST}).json()
    assert client.post(f"/api/jobs/{queued['id']}/cancel").json()["status"] == "cancelled"
    deadline = time.monotonic() + 60
    while client.get("/sdapi/v1/progress").json()["state"]["sampling_step"] == 0:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    progress = client.get("/sdapi/v1/progress").json()
    assert 0 < progress["progress"] < 1 and progress["state"]["job_count"] == 1
    assert progress["current_image"] and Image.open(io.BytesIO(base64.b64decode(progress["current_image"])))
    client.post(f"/api/jobs/{long['id']}/cancel")
    assert wait_job(client, long["id"])["status"] == "interrupted"
    assert client.post(f"/api/jobs/{long['id']}/cancel").status_code == 409
    assert client.get("/sdapi/v1/progress").json()["state"]["job_count"] == 0


def test_event_stream_reports_progress_then_the_end(client: TestClient) -> None:
    job = client.post("/api/jobs", json={"prompt": "1girl", "seed": 5, **{**FAST, "steps": 40}}).json()
    events = []
    with client.stream("GET", f"/api/jobs/{job['id']}/events") as stream:
        name = None
        for line in stream.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                events.append((name, json.loads(line[6:])))
                if name == "done":
                    break
    names = [n for n, _ in events]
    assert names[-1] == "done" and events[-1][1]["images"][0]["seed"] == 5
    steps = [data["step"] for n, data in events if n == "progress"]
    assert steps and steps == sorted(steps) and all(1 <= s <= 40 for s in steps)
    assert any((data["preview"] or "").startswith("data:image/png;base64,") for n, data in events if n == "progress")


def test_skip_drops_the_current_batch_only(client: TestClient) -> None:
    body = {"prompt": "1girl", "seed": 10, "n_iter": 2, **{**FAST, "steps": 300}}
    job = client.post("/api/jobs", json=body).json()
    deadline = time.monotonic() + 60
    while client.get("/sdapi/v1/progress").json()["state"]["sampling_step"] == 0:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    client.post("/sdapi/v1/skip")
    done = wait_job(client, job["id"], timeout=120)
    assert done["status"] == "done" and [image["seed"] for image in done["images"]] == [11]


def test_token_counter_endpoint(client: TestClient) -> None:
    body = client.post("/api/tokens", json={"prompt": ", ".join(["1girl"] * 40)}).json()
    assert body["tokens"] > 75 and body["limit"] == 150 and len(body["chunks"]) == 2


def test_embeddings_listed_against_the_current_checkpoint_width(client: TestClient) -> None:
    import torch
    from safetensors.torch import save_file

    folder = default_home(os.environ) / "embeddings"
    folder.mkdir(parents=True)
    save_file({"emb_params": torch.zeros(2, 128)}, folder / "fits.safetensors")  # the demo text width
    save_file({"emb_params": torch.zeros(1, 768)}, folder / "sd15only.safetensors")
    body = client.get("/sdapi/v1/embeddings").json()
    assert body["loaded"]["fits"]["vectors"] == 2 and body["loaded"]["fits"]["shape"] == 128
    assert "768" in body["skipped"]["sd15only"]["reason"]


def _face_png() -> str:
    from emaki.demo.faces import FaceAttributes, draw_face

    buffer = io.BytesIO()
    draw_face(FaceAttributes("red", "long hair", "blue", "smile", "white")).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_img2img_through_both_apis(client: TestClient) -> None:
    from emaki.demo import describe

    face = _face_png()
    body = client.post("/sdapi/v1/img2img", json={
        "init_images": ["data:image/png;base64," + face], "prompt": "1girl, long hair, red hair, smile",
        "denoising_strength": 0.3, "seed": 4, "steps": 10, "width": 64, "height": 64, "resize_mode": 0}).json()
    info = json.loads(body["info"])
    assert info["denoising_strength"] == 0.3 and "Denoising strength: 0.3" in info["infotexts"][0]
    image = Image.open(io.BytesIO(base64.b64decode(body["images"][0])))
    assert image.size == (64, 64) and describe(image)["hair_color"] == "red"
    assert body["parameters"]["init_images"] is None  # include_init_images is false
    job = client.post("/api/jobs", json={"init_image": face, "prompt": "1girl, green hair", "seed": 1,
                                         "denoising_strength": 1.0, "steps": 6}).json()
    done = wait_job(client, job["id"])
    assert done["status"] == "done" and "Denoising strength: 1," in done["images"][0]["infotext"]
    inputs = default_home(os.environ) / "inputs"
    deadline = time.monotonic() + 10  # deleted by the job's end callback, just after the end is visible
    while list(inputs.glob("*.png")) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert list(inputs.glob("*.png")) == []  # deleted when their jobs ended


def test_img2img_refusals(client: TestClient) -> None:
    face = _face_png()
    assert client.post("/sdapi/v1/img2img", json={"prompt": "x"}).status_code == 422
    masked = client.post("/sdapi/v1/img2img", json={"init_images": [face], "latent_mask": face, "prompt": "x"})
    assert masked.status_code == 422 and "latent_mask" in masked.json()["detail"]
    assert client.post("/sdapi/v1/img2img", json={"init_images": ["???"], "prompt": "x"}).status_code == 422
    path = client.post("/api/jobs", json={"init_image": "/etc/passwd", "prompt": "x"})
    assert path.status_code == 422 and "init_image" in path.text  # a path is not an image
    refused = client.post("/sdapi/v1/img2img", json={"init_images": [face], "prompt": "loli, nude"})
    assert refused.status_code == 400
    assert not (default_home(os.environ) / "inputs").exists() or not list((default_home(os.environ) / "inputs").iterdir())


def test_a_job_that_cannot_be_written_fails_and_the_worker_goes_on(client: TestClient) -> None:
    outputs = default_home(os.environ) / "outputs"
    outputs.write_text("not a folder")  # saving will fail
    broken = wait_job(client, client.post("/api/jobs", json={"prompt": "1girl", **FAST}).json()["id"])
    assert broken["status"] == "failed" and "could not write the image" in broken["error"]
    assert client.get("/api/gallery").json() == []  # no row without its file
    outputs.unlink()
    fine = wait_job(client, client.post("/api/jobs", json={"prompt": "1girl", **FAST}).json()["id"])
    assert fine["status"] == "done" and len(client.get("/api/gallery").json()) == 1


def test_hires_fix_through_the_a1111_api(client: TestClient) -> None:
    body = client.post("/sdapi/v1/txt2img", json={
        "prompt": "1girl", "seed": 2, "steps": 4, "width": 64, "height": 64, "enable_hr": True, "hr_scale": 1.5,
        "hr_upscaler": "Latent", "hr_second_pass_steps": 3, "denoising_strength": 0.5,
        "hr_checkpoint_name": "Use same checkpoint", "hr_sampler_name": "Use same sampler"}).json()
    info = json.loads(body["info"])
    assert Image.open(io.BytesIO(base64.b64decode(body["images"][0]))).size == (96, 96)
    assert info["denoising_strength"] == 0.5 and "Hires upscale: 1.5, Hires steps: 3" in info["infotexts"][0]
    bad = client.post("/sdapi/v1/txt2img", json={"prompt": "1girl", "enable_hr": True, "hr_upscaler": "4x-UltraSharp"})
    assert bad.status_code == 422 and "hr_upscaler" in bad.json()["detail"]
    refused = client.post("/sdapi/v1/txt2img", json={"prompt": "1girl", "enable_hr": True, "hr_prompt": "loli, nude"})
    assert refused.status_code == 400
