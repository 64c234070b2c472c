"""The routes the web page adds (in-process, demo model, 64x64, 1 step): gallery search over the
model and infotext, thumbnails, deleting an image, the prompt-tag list for autocomplete (shipped
and workspace CSVs, bad rows and oversized files skipped) and the X/Y/Z axis list."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from job_waiting import wait_job
from PIL import Image

from emaki.prompts import tag_list
from emaki.server import ServerSettings, create_app

FAST = {"steps": 1, "width": 64, "height": 64, "sampler_name": "Euler a"}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    home = tmp_path_factory.mktemp("webui-home")
    with pytest.MonkeyPatch.context() as patch:
        # A module's server: the autouse per-test isolation (conftest.py) comes after it.
        for name, value in (("EMAKI_HOME", str(home)), ("EMAKI_A1111", ""), ("EMAKI_PRECISION", "fp32"),
                            ("HF_HUB_OFFLINE", "1")):
            patch.setenv(name, value)
        with TestClient(create_app(ServerSettings())) as test_client:
            yield test_client


@pytest.fixture(scope="module")
def images(client: TestClient) -> list[dict]:
    """Two finished images: a red one (seed 1) and a blue one (seed 2)."""
    made = []
    for seed, prompt in ((1, "1girl, red hair"), (2, "1girl, blue hair")):
        job = wait_job(client, client.post("/api/jobs", json={"prompt": prompt, "seed": seed, **FAST}).json()["id"])
        assert job["status"] == "done", job
        made += job["images"]
    return made


def test_gallery_search_matches_model_and_infotext_any_case(client: TestClient, images: list[dict]) -> None:
    search = lambda q: [row["seed"] for row in client.get("/api/gallery", params={"q": q}).json()]
    assert search("BLUE HAIR") == [2]
    assert search("seed: 1,") == [1]  # infotext text
    assert sorted(search(images[0]["model"].upper())) == [1, 2]  # the model's name
    assert search("100%_") == []  # LIKE wildcards are plain text
    assert client.get("/api/gallery", params={"q": "x" * 1001}).status_code == 422


def test_thumbnail_is_a_small_jpeg_and_bad_sizes_are_422(client: TestClient, images: list[dict]) -> None:
    url = images[0]["url"]
    small = client.get(url, params={"thumb": 32})
    assert small.status_code == 200 and small.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(small.content)).size == (32, 32)
    same = client.get(url, params={"thumb": 256})  # never enlarged
    assert Image.open(io.BytesIO(same.content)).size == (64, 64)
    for bad in ("0", "5000", "big"):
        response = client.get(url, params={"thumb": bad})
        assert response.status_code == 422 and "thumb" in response.text
    assert client.get("/api/images/999999", params={"thumb": 64}).status_code == 404


def test_delete_removes_the_row_and_the_file(client: TestClient, images: list[dict]) -> None:
    job = wait_job(client, client.post("/api/jobs", json={"prompt": "1girl, doomed", "seed": 9, **FAST}).json()["id"])
    image = job["images"][0]
    path = Path(client.app.state.service.store.image(image["id"])["path"])
    assert path.is_file()
    assert client.delete(image["url"]).status_code == 204
    assert not path.exists()
    assert image["id"] not in [row["id"] for row in client.get("/api/gallery").json()]
    assert client.get(image["url"]).status_code == 404
    missing = client.delete(image["url"])
    assert missing.status_code == 404 and str(image["id"]) in missing.json()["detail"]
    assert client.delete("/api/images/nope").status_code == 422
    assert client.delete(f"/api/images/{2**70}").status_code == 404


def test_tags_from_the_shipped_list_by_prefix_and_alias(client: TestClient) -> None:
    found = client.get("/api/tags", params={"q": "long h"}).json()
    assert found[0]["tag"] == "long_hair" and found[0]["category"] == 0 and found[0]["count"] > 0
    assert all(row["tag"].startswith("long_h") for row in found)
    by_alias = [row["tag"] for row in client.get("/api/tags", params={"q": "nekomimi"}).json()]
    assert by_alias == ["cat_ears"]
    counts = [row["count"] for row in client.get("/api/tags", params={"limit": 50}).json()]
    assert len(counts) == 50 and counts == sorted(counts, reverse=True)
    assert len(tag_list.load_tags(client.app.state.service.engine.workspace)) >= 300
    for bad in ({"limit": 0}, {"limit": 5000}, {"q": "x" * 201}):
        assert client.get("/api/tags", params=bad).status_code == 422


def test_workspace_tag_files_are_added_bad_rows_and_big_files_skipped(
        client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = client.app.state.service.engine.workspace.folders("tags")[0]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "mine.csv").write_text('zzcustom_tag,4,77,"zzalias"\nzzbroken,notanumber,3\nzzshort\n'
                                     "long_hair,0,1\n", encoding="utf-8")
    (folder / "huge.csv").write_text("zzhuge_tag,0,5\n" + "x" * 200, encoding="utf-8")
    monkeypatch.setattr(tag_list, "MAX_FILE_BYTES", 100)
    try:
        found = client.get("/api/tags", params={"q": "zz"}).json()
        assert [row["tag"] for row in found] == ["zzcustom_tag"]
        assert found[0] == {"tag": "zzcustom_tag", "category": 4, "count": 77, "aliases": ["zzalias"]}
        shipped = client.get("/api/tags", params={"q": "long_hair"}).json()[0]
        assert shipped["count"] > 1  # the shipped row came first and stays
    finally:
        (folder / "mine.csv").unlink()
        (folder / "huge.csv").unlink()


def test_grid_axes_lists_the_supported_axes_once(client: TestClient) -> None:
    axes = client.get("/api/grid/axes").json()
    labels = [axis["label"] for axis in axes]
    assert len(labels) == len(set(labels))
    assert {"Steps", "CFG Scale", "Sampler", "Seed", "Prompt S/R", "LoRA weight"} <= set(labels)
    assert "Image CFG Scale" not in labels  # not supported by emaki
    sampler = next(axis for axis in axes if axis["label"] == "Sampler")
    assert sampler["mode"] == "both" and sampler["kind"] == "choice" and "Euler a" in sampler["choices"]
