"""kohya's aspect-ratio buckets and repeats: the bucket sizes for a training size, each image
fitted to the bucket of its aspect ratio, batches from one bucket, `N_name` folders and
`repeats` using images N times per epoch; the options on TrainingParams, the CLI and a LoRA run."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch
from PIL import Image

from emaki.cli import main
from emaki.devices import DevicePolicy
from emaki.engine import Engine
from emaki.errors import ParamsError
from emaki.training.buckets import bucket_resolutions, fit_to_bucket, nearest_bucket, parse_buckets
from emaki.training.dataset import batch_order, load_images
from emaki.training.params import TrainingParams
from emaki.workspace import Workspace

QUICK = {"preview_every": 0, "save_every": 0}


def test_kohyas_buckets_for_512_are_found_and_every_one_fits() -> None:
    buckets = bucket_resolutions((512, 512), 256, 1024, 64)
    # the buckets kohya's sd-scripts list for SD 1.5 at 512 (each with its transpose)
    assert {(512, 512), (448, 576), (384, 640), (320, 768), (256, 1024), (576, 448), (1024, 256)} <= buckets
    for width, height in buckets:
        assert width * height <= 512 * 512 and width % 64 == 0 and height % 64 == 0
        assert 256 <= width <= 1024 and 256 <= height <= 1024 and (height, width) in buckets


def test_an_image_is_scaled_to_cover_its_bucket_and_cropped_about_its_centre() -> None:
    image = Image.new("RGB", (350, 100), (0, 0, 0))
    image.paste((255, 0, 0), (0, 0, 20, 100))  # a red band at the left edge: cropped away
    buckets = sorted(bucket_resolutions((64, 64), 32, 128, 32))
    bucket = nearest_bucket(image.size, buckets)
    assert bucket == (96, 32)  # ratio 3.5: 3 and 4 are as near, the first bucket wins
    fitted = fit_to_bucket(image, bucket)  # scaled to 112x32, 8 pixels cropped from each side
    assert fitted.size == (96, 32)
    assert fitted.getpixel((0, 16)) == (0, 0, 0) and fitted.getpixel((95, 16)) == (0, 0, 0)
    assert nearest_bucket((100, 100), buckets) == (64, 64)


def _image(path: Path, size: tuple[int, int], colour: tuple[int, int, int] = (200, 120, 60)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def test_bucketed_images_keep_their_aspect_and_batches_hold_one_bucket(tmp_path: Path) -> None:
    for i, size in enumerate([(90, 30), (95, 31), (40, 40), (30, 90), (31, 33)]):
        _image(tmp_path / f"{i}.png", size)
    images = load_images(tmp_path, size=(64, 64), varsize=False, use_weight=False, buckets=(32, 128, 32))
    shapes = [tuple(image.pixels.shape[-2:]) for image in images]  # (H, W)
    assert shapes == [(32, 96), (32, 96), (64, 64), (96, 32), (64, 64)]
    order = batch_order(images, 2, torch.Generator().manual_seed(0))
    for _ in range(12):
        batch = next(order)
        assert len({shapes[i] for i in batch}) == 1


def test_repeat_folders_and_repeats_use_images_n_times_per_epoch(tmp_path: Path) -> None:
    _image(tmp_path / "plain.png", (32, 32))
    _image(tmp_path / "3_sepia girl" / "a.png", (32, 32))
    _image(tmp_path / "3_sepia girl" / "b.png", (32, 32))
    (tmp_path / "3_sepia girl" / "b.txt").write_text("1girl, sepia")
    _image(tmp_path / "notes" / "ignored.png", (32, 32))  # not an N_name folder
    images = load_images(tmp_path, size=(32, 32), varsize=False, use_weight=False, repeats=2)
    assert [(image.path.name, image.repeats, image.filewords) for image in images] == [
        ("plain.png", 2, "plain"), ("a.png", 3, "sepia girl"), ("b.png", 3, "1girl, sepia")]
    order = batch_order(images, 1, torch.Generator().manual_seed(1))
    used = Counter(next(order)[0] for _ in range(2 * 8))  # two epochs of 2 + 3 + 3 images
    assert used == Counter({0: 4, 1: 6, 2: 6})


def test_bucket_and_repeat_options_are_checked() -> None:
    base = {"kind": "lora", "name": "x", "data": "d", "steps": 1}
    assert TrainingParams.create(**base, buckets=[256, 1024, 64], repeats=10).buckets == [256, 1024, 64]
    for bad, words in [({"buckets": [256, 1024, 60]}, "multiples of 8"), ({"buckets": [512, 256, 64]}, "MIN ≤ MAX"),
                       ({"buckets": [256, 1024]}, "three numbers"), ({"repeats": 0}, "repeats"),
                       ({"buckets": [256, 1024, 64], "varsize": True}, "buckets and varsize")]:
        with pytest.raises(ParamsError, match=words):
            TrainingParams.create(**base, **bad)
    assert parse_buckets("256,1024,64") == (256, 1024, 64)
    with pytest.raises(ParamsError, match="--buckets"):
        parse_buckets("wide")


def test_a_lora_trains_on_buckets_and_repeats_from_the_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    from safetensors import safe_open

    data = tmp_path / "data"
    _image(data / "2_sepia" / "wide.png", (96, 48), (112, 66, 20))
    _image(data / "2_sepia" / "tall.png", (48, 96), (112, 66, 20))
    _image(data / "square.png", (64, 64), (112, 66, 20))
    monkeypatch.setenv("EMAKI_HOME", str(tmp_path / "home"))
    main(["train", "lora", "bucketed", "--data", str(data), "--steps", "2", "--rank", "2", "--size", "64x64",
          "--buckets", "32,128,32", "--repeats", "3", "--batch-size", "2", "--preview-every", "0",
          "--save-every", "0", "--threads", "1"])
    path = Path(capsys.readouterr().out.strip())
    assert path == tmp_path / "home" / "loras" / "bucketed.safetensors"
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    assert meta["ss_enable_bucket"] == "True" and meta["ss_min_bucket_reso"] == "32"
    assert meta["ss_max_bucket_reso"] == "128" and meta["ss_bucket_reso_steps"] == "32"
    assert meta["ss_num_train_images"] == "7"  # 3 + 2 + 2


def test_the_engine_trains_with_repeats(tmp_path: Path) -> None:
    engine = Engine(Workspace(tmp_path / "home"), DevicePolicy.choose("fp32", "cpu", threads=1))
    data = tmp_path / "data"
    _image(data / "5_thing" / "a.png", (64, 64))
    outcome = engine.train(TrainingParams.create(kind="embedding", name="thing", data=str(data), steps=2,
                                                 width=64, height=64, **QUICK))
    assert outcome.step == 2 and outcome.path.is_file()


def test_the_train_route_takes_buckets_and_repeats(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from emaki.server import ServerSettings, create_app

    data = tmp_path / "data"
    _image(data / "a.png", (64, 64))
    body = {"kind": "lora", "name": "web", "data": str(data), "steps": 2, **QUICK}
    with TestClient(create_app(ServerSettings(run_worker=False))) as client:
        bad = client.post("/api/train", json={**body, "buckets": [256, 1024, 60]})
        assert bad.status_code == 422 and "buckets" in bad.text
        queued = client.post("/api/train", json={**body, "buckets": [32, 128, 32], "repeats": 4})
        assert queued.status_code == 202, queued.text
        params = queued.json()["params"]
        assert params["buckets"] == [32, 128, 32] and params["repeats"] == 4
