"""Face restoration is refused, and the refusal says what it would take: the restorer file and
its folder, and the face detector emaki does not have (a restorer file alone is not enough)."""

from __future__ import annotations

from emaki.server.extras import face_restoration_refused, face_restorers, face_restorers_folder
from emaki.workspace import Workspace


def test_the_refusal_names_the_files_the_folder_and_the_missing_detector(tmp_path):
    workspace = Workspace(tmp_path)
    message = str(face_restoration_refused(workspace, "restore_faces"))
    folder = str(face_restorers_folder(workspace))
    assert message.startswith("restore_faces: ")
    assert "GFPGANv1.4.pth" in message and "codeformer-v0.1.0.pth" in message and folder in message
    assert "face detector" in message and "detection_Resnet50_Final.pth" in message
    assert "\n" not in message


def test_a_restorer_file_alone_is_named_as_present_but_not_enough(tmp_path):
    workspace = Workspace(tmp_path)
    face_restorers_folder(workspace).mkdir(parents=True)
    (face_restorers_folder(workspace) / "GFPGANv1.4.pth").write_bytes(b"weights")
    message = str(face_restoration_refused(workspace, "gfpgan_visibility"))
    assert message.startswith("gfpgan_visibility: ") and "GFPGANv1.4.pth is there" in message
    assert "face detector" in message
    assert face_restorers(workspace) == []  # nothing listed that a request could not use
