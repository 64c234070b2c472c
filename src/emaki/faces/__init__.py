"""Face restoration as A1111 does it through facexlib, without facexlib: RetinaFace finds faces
and five landmarks, each face is aligned to the FFHQ template, restored by a GFPGAN model
(spandrel), and pasted back with a soft mask. docs/design-notes.md, "Face restoration"."""

from emaki.faces.detection import DetectedFace, detect_faces, find_faces
from emaki.faces.loading import DETECTOR_FILE, load_detector
from emaki.faces.restore import restore_faces
from emaki.faces.restorers import (
    RESTORER_FILES,
    FaceFiles,
    check_restorer_name,
    find_face_files,
    load_restorer,
    missing_files_message,
    restorer_folders,
)
from emaki.faces.retinaface import RetinaFace

__all__ = [
    "DETECTOR_FILE",
    "RESTORER_FILES",
    "DetectedFace",
    "FaceFiles",
    "RetinaFace",
    "check_restorer_name",
    "detect_faces",
    "find_face_files",
    "find_faces",
    "load_detector",
    "load_restorer",
    "missing_files_message",
    "restore_faces",
    "restorer_folders",
]
