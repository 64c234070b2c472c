"""A running `emaki serve` driven by the real A1111 client from PyPI (`webuiapi`), by many
concurrent submitters, and through a crash."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import webuiapi

from emaki.cli import main

FAST = {"steps": 2, "width": 64, "height": 64}


def test_webuiapi_client_works_unchanged(live_server) -> None:
    api = webuiapi.WebUIApi(host="127.0.0.1", port=live_server.port, sampler="Euler a", steps=4)
    models = api.get_sd_models()
    assert models[0]["model_name"] == "emaki-demo"
    assert "Euler a" in [s["name"] for s in api.get_samplers()]
    api.util_set_model("emaki-demo")
    assert api.get_options()["sd_model_checkpoint"] == models[0]["title"]
    result = api.txt2img(prompt="1girl, pink hair, green eyes, smile", negative_prompt="hat", seed=1234,
                         width=64, height=64, cfg_scale=7)
    assert len(result.images) == 1 and result.images[0].size == (64, 64)
    assert result.info["all_seeds"] == [1234] and result.info["sd_model_name"] == "emaki-demo"
    assert result.parameters["prompt"] == "1girl, pink hair, green eyes, smile"
    infotext = result.info["infotexts"][0]
    assert infotext.startswith("1girl, pink hair, green eyes, smile\nNegative prompt: hat\nSteps: 4, Sampler: Euler a")
    read_back = api.png_info(result.images[0])
    assert read_back.info == infotext
    redrawn = api.img2img(images=[result.images[0]], prompt="1girl, pink hair, green eyes, smile",
                          denoising_strength=0.4, seed=77, width=64, height=64)
    assert redrawn.images[0].size == (64, 64) and redrawn.info["all_seeds"] == [77]
    assert "Denoising strength: 0.4" in redrawn.info["infotexts"][0]
    hires = api.txt2img(prompt="1girl, pink hair", seed=5, width=64, height=64, steps=3, enable_hr=True,
                        hr_scale=1.5, hr_second_pass_steps=2, denoising_strength=0.5)
    assert hires.images[0].size == (96, 96) and "Hires upscale: 1.5" in hires.info["infotexts"][0]
    progress = api.get_progress()
    assert progress["progress"] == 0 and progress["state"]["job_count"] == 0
    api.util_wait_for_ready(check_interval=0.1)


def test_webuiapi_with_basic_auth(server_factory) -> None:
    server = server_factory(["--api-auth", "alice:s3cret,bob:hunter2"], auth=("alice", "s3cret"))
    anonymous = webuiapi.WebUIApi(host="127.0.0.1", port=server.port)
    with pytest.raises(RuntimeError) as refused:
        anonymous.txt2img(prompt="1girl", **FAST)
    assert refused.value.args[0] == 401
    response = httpx.get(server.url + "/sdapi/v1/options")
    assert response.status_code == 401 and response.headers["www-authenticate"] == "Basic"
    assert response.json() == {"detail": "Incorrect username or password"}
    wrong = httpx.get(server.url + "/sdapi/v1/options", auth=("bob", "wrong"))
    assert wrong.status_code == 401
    api = webuiapi.WebUIApi(host="127.0.0.1", port=server.port, username="bob", password="hunter2")
    result = api.txt2img(prompt="1girl, red hair", seed=5, **FAST)
    assert result.info["all_seeds"] == [5]
    assert [m["model_name"] for m in api.get_sd_models()] == ["emaki-demo"]


def test_bearer_token(server_factory) -> None:
    server = server_factory(["--token", "tok-123"], headers={"Authorization": "Bearer tok-123"})
    refused = httpx.get(server.url + "/api/gallery")
    assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
    assert httpx.get(server.url + "/api/gallery", headers={"Authorization": "Bearer nope"}).status_code == 401
    with server.client() as client:
        assert client.get("/api/gallery").status_code == 200
    page = httpx.get(server.url + "/")  # the page too: a browser asks for a user and the token as password
    assert page.status_code == 401 and page.headers["www-authenticate"].startswith("Basic realm=")
    assert httpx.get(server.url + "/", auth=("anyone", "tok-123")).status_code == 200


@pytest.mark.parametrize("flags, message", [
    (["--listen"], "without --api-auth or --token"),
    (["--host", "0.0.0.0"], "without --api-auth or --token"),
    (["--listen", "--api-auth", "nopassword"], "--api-auth: expected user:password"),
])
def test_listen_refuses_to_start_without_auth(flags, message, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["serve", *flags, "--port", "1"])
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def _submit(server, i: int) -> str:
    with server.client() as client:
        response = client.post("/api/jobs", json={"prompt": f"1girl, job {i}", "seed": i, "steps": 1,
                                                  "width": 64, "height": 64})
        assert response.status_code == 202, response.text
        return response.json()["id"]


def _wait_all(server, ids: list[str], timeout: float) -> dict[str, dict]:
    deadline = time.monotonic() + timeout
    with server.client() as client:
        while True:
            jobs = {j["id"]: j for j in client.get("/api/jobs", params={"limit": 1000}).json()}
            if all(jobs.get(i, {}).get("status") in ("done", "failed", "cancelled", "interrupted") for i in ids):
                return jobs
            assert time.monotonic() < deadline, f"{sum(j['status'] == 'done' for j in jobs.values())} done in time"
            time.sleep(0.25)


@pytest.mark.slow  # 200 jobs through a real server: a load check
def test_200_concurrent_jobs_all_complete_once(live_server) -> None:
    with ThreadPoolExecutor(32) as pool:
        ids = list(pool.map(lambda i: _submit(live_server, i), range(200)))
    assert len(set(ids)) == 200
    jobs = _wait_all(live_server, ids, timeout=300)
    assert all(jobs[i]["status"] == "done" for i in ids)
    with live_server.client() as client:
        gallery = client.get("/api/gallery", params={"limit": 500}).json()
        assert sorted(row["seed"] for row in gallery) == list(range(200))  # none lost, none twice
        assert all(client.get(row["url"]).status_code == 200 for row in gallery)
    assert len(list((live_server.home / "outputs").rglob("*.png"))) == 200


def test_queued_jobs_survive_a_crash(live_server) -> None:
    slow = {"prompt": "1girl", "steps": 150, "width": 64, "height": 64}
    with live_server.client() as client:
        first = client.post("/api/jobs", json=slow | {"seed": 1}).json()["id"]
        queued = [client.post("/api/jobs", json=slow | {"steps": 2, "seed": s}).json()["id"] for s in (2, 3, 4)]
        deadline = time.monotonic() + 60
        while client.get(f"/api/jobs/{first}").json()["status"] != "running":
            assert time.monotonic() < deadline
            time.sleep(0.05)
    live_server.stop(kill=True)  # SIGKILL: no clean shutdown
    live_server.start()
    jobs = _wait_all(live_server, [first, *queued], timeout=120)
    assert [jobs[i]["status"] for i in [first, *queued]] == ["done"] * 4
    assert jobs[first]["attempts"] == 2 and "retried" in jobs[first]["note"]
    with live_server.client() as client:
        seeds = sorted(row["seed"] for row in client.get("/api/gallery").json())
        assert seeds == [1, 2, 3, 4]
        for row in client.get("/api/gallery").json():
            assert client.get(row["url"]).status_code == 200
        # the gallery is still there after a clean restart too
    live_server.restart()
    with live_server.client() as client:
        assert len(client.get("/api/gallery").json()) == 4


def test_a1111_request_while_another_client_watches_progress(live_server) -> None:
    """`/progress` answers during a run and shows a preview; the txt2img reply is complete."""
    with ThreadPoolExecutor(1) as pool:
        with live_server.client() as client:
            future = pool.submit(client.post, "/sdapi/v1/txt2img",
                                 json={"prompt": "1girl", "steps": 200, "width": 64, "height": 64, "seed": 9})
            seen = []
            while not future.done():
                progress = client.get("/sdapi/v1/progress").json()
                if progress["state"]["sampling_step"] > 0:
                    seen.append(progress)
                time.sleep(0.05)
            body = future.result().json()
    assert json.loads(body["info"])["all_seeds"] == [9]
    assert seen and any(p["current_image"] for p in seen)
    assert all(0 < p["progress"] <= 1 for p in seen)
