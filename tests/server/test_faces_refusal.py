"""Face restoration through the server: refused with one line naming what is missing (the
restorer file, the face detector's file, the folder) until both files are there; then listed by
`/sdapi/v1/face-restorers` and run by the extras' `gfpgan_visibility` (the models are stand-ins
here: detection and restoration themselves are tested in tests/faces/)."""

from __future__ import annotations

import base64
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from face_stand_ins import face_at, put_face_files, use_stand_ins
from fastapi.testclient import TestClient
from PIL import Image

from emaki.engine.faces import FaceRestoration
from emaki.errors import ParamsError
from emaki.server import ServerSettings, create_app
from emaki.server.extras import face_restorers, face_restorers_folder
from emaki.workspace import Workspace, default_home


def _refusal(workspace: Workspace, field: str) -> str:
    with pytest.raises(ParamsError) as refused:
        FaceRestoration().check(workspace, "GFPGAN", field)
    return str(refused.value)


def test_the_refusal_names_the_files_the_folder_and_the_missing_detector(tmp_path):
    workspace = Workspace(tmp_path)
    message = _refusal(workspace, "restore_faces")
    folder = str(face_restorers_folder(workspace))
    assert message.startswith("restore_faces: ")
    assert "GFPGANv1.4.pth" in message and folder in message and "nothing is there" in message
    assert "face detector" in message and "detection_Resnet50_Final.pth" in message
    assert "\n" not in message


def test_a_restorer_file_alone_is_named_as_present_but_not_enough(tmp_path):
    workspace = Workspace(tmp_path)
    face_restorers_folder(workspace).mkdir(parents=True)
    (face_restorers_folder(workspace) / "GFPGANv1.4.pth").write_bytes(b"weights")
    message = _refusal(workspace, "gfpgan_visibility")
    assert message.startswith("gfpgan_visibility: ") and "GFPGANv1.4.pth found there" in message
    assert "face detector" in message and "a restorer model" not in message
    assert face_restorers(workspace) == []  # nothing listed that a request could not use


def test_both_files_in_an_a1111_install_are_listed(tmp_path):
    folder = tmp_path / "webui" / "models" / "GFPGAN"
    folder.mkdir(parents=True)
    for name in ("GFPGANv1.4.pth", "detection_Resnet50_Final.pth"):
        (folder / name).write_bytes(b"weights")
    assert face_restorers(Workspace(tmp_path / "home")) == []
    assert face_restorers(Workspace(tmp_path / "home", tmp_path / "webui")) == [
        {"name": "GFPGAN", "cmd_dir": str(folder)}]


def _png64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _picture() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(np.kron(rng.integers(0, 256, (12, 16, 3)), np.ones((8, 8, 1))).astype(np.uint8), "RGB")


# A face in the middle of the 128×96 picture, its eyes 19 pixels apart.
FACE = face_at((32, 16, 96, 80), 0.15, (64.0, 48.0))


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """A server whose face detector finds FACE and whose "GFPGAN" inverts the colours."""
    use_stand_ins(monkeypatch, lambda picture: [FACE])
    with TestClient(create_app(ServerSettings())) as test_client:
        yield test_client


def _put_files(*names: str) -> Path:
    return put_face_files(default_home(os.environ) / "face-restorers", *names)


def test_extras_refuse_face_restoration_naming_the_missing_detector(client: TestClient):
    _put_files("GFPGANv1.4.pth")
    answer = client.post("/sdapi/v1/extra-single-image", json={"image": _png64(_picture()), "gfpgan_visibility": 1})
    assert answer.status_code == 422 and "detection_Resnet50_Final.pth" in answer.text
    assert client.get("/sdapi/v1/face-restorers").json() == []


def test_extras_restore_faces_with_gfpgan_and_refuse_codeformer(client: TestClient):
    folder = _put_files("GFPGANv1.4.pth", "detection_Resnet50_Final.pth", "codeformer-v0.1.0.pth")
    assert client.get("/sdapi/v1/face-restorers").json() == [{"name": "GFPGAN", "cmd_dir": str(folder)}]
    source = _picture()
    answer = client.post("/sdapi/v1/extra-single-image", json={"image": _png64(source), "gfpgan_visibility": 0.5})
    assert answer.status_code == 200, answer.text
    reply = answer.json()
    assert reply["html_info"] == "<div><p>GFPGAN visibility: 0.5</p></div>"
    result = np.asarray(Image.open(io.BytesIO(base64.b64decode(reply["image"])))).astype(int)
    original = np.asarray(source).astype(int)
    nose = (52, 68)  # (row, column) in a block's middle, next to the face's nose
    assert abs(result[nose] - (original[nose] + 255 - original[nose]) / 2).max() <= 2  # half inverted
    assert (result[:4] == original[:4]).all()  # far from the face: untouched
    refused = client.post("/sdapi/v1/extra-single-image", json={"image": _png64(source), "codeformer_visibility": 1})
    assert refused.status_code == 422 and "GFPGAN only" in refused.text and "spandrel_extra_arches" in refused.text


def test_unknown_restorer_names_are_refused_by_the_engine(tmp_path):
    with pytest.raises(ParamsError, match="unknown face restorer 'RestoreFormer'"):
        FaceRestoration().check(Workspace(tmp_path), "RestoreFormer", "face_restoration_model")


def test_txt2img_restores_faces_and_refuses_codeformer(client: TestClient):
    _put_files("GFPGANv1.4.pth", "detection_Resnet50_Final.pth")
    body = {"prompt": "1girl", "steps": 2, "width": 64, "height": 64, "seed": 1, "sampler_name": "Euler"}
    answer = client.post("/sdapi/v1/txt2img", json=body | {"restore_faces": True})
    assert answer.status_code == 200, answer.text
    info = json.loads(answer.json()["info"])
    assert info["restore_faces"] is True and info["face_restoration_model"] == "GFPGAN"
    assert "Face restoration: GFPGAN" in info["infotexts"][0]
    refused = client.post("/sdapi/v1/txt2img", json=body | {
        "restore_faces": True, "override_settings": {"face_restoration_model": "CodeFormer"}})
    assert refused.status_code == 422 and "GFPGAN only" in refused.text


def test_a_native_job_asking_for_faces_without_the_files_is_refused_before_queuing(client: TestClient):
    _put_files("GFPGANv1.4.pth")
    answer = client.post("/api/jobs", json={"prompt": "1girl", "steps": 2, "width": 64, "height": 64,
                                            "restore_faces": True})
    assert answer.status_code == 422 and "detection_Resnet50_Final.pth" in answer.text
    assert client.get("/api/jobs").json() == []
