"""The face stage on real photos: every portrait found and confirmed by the mesh, every non-face photo
refused, profiles and skin close-ups taken as such, and the view an app asks for respected."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest

from orchestrator.decode.images import decode_image
from orchestrator.errors import NoFaceFound
from orchestrator.face.detection import KEYPOINTS, FaceDetector
from orchestrator.face.scene import SceneCheck
from orchestrator.face.stage import FaceGeometry, Geometry
from orchestrator.settings import Settings
from serving import contract
from tests.conftest import DATA, data_dir

FACES = sorted(p.name for p in (DATA / "faces").glob("*")) if (DATA / "faces").exists() else []
NONFACES = sorted(p.name for p in (DATA / "nonfaces").glob("*")) if (DATA / "nonfaces").exists() else []
TWO_PEOPLE = ("fr_two_people.jpg", "sn_laos.jpg", "sn_classroom_in_tanzania.jpg")
# ACNE04 train photos (never test): a head turned past what the mesh holds, a profile the mesh cannot
# read at all, and a close-up of a cheek with no whole face.
TURNED_AWAY = "levle0_0_jpg.rf.2809c8a0d7e1779910e9975cd0f98b71.jpg"
UNREAD_PROFILE = "levle0_119_jpg.rf.55221d8a0faae07b069adf00108111c2.jpg"
CLOSEUP = "levle0_224_jpg.rf.3d9bbdfc631db2083e935917687915f4.jpg"


@functools.cache
def geometry() -> FaceGeometry:
    return FaceGeometry(scene=SceneCheck(Settings().scene_model_path))


def _rgb(path: Path) -> np.ndarray:
    return decode_image(path.read_bytes(), max_pixels=64_000_000, long_side_px=2000).rgb


def _analyse(path: Path, request: str = "auto") -> Geometry:
    return geometry().analyse(_rgb(path), request)


@pytest.mark.parametrize("name", FACES)
def test_every_portrait_is_a_face_the_mesh_reads(faces_dir: Path, name: str) -> None:
    found = _analyse(faces_dir / name)
    assert found.view in ("frontal", "three_quarter")
    assert found.pose is not None and found.faces_detected >= 1
    assert found.face.shape == (contract.FACE_SIZE_PX, contract.FACE_SIZE_PX, 3)
    assert found.mask.labels.shape == found.face.shape[:2] and found.mask.labels.max() <= len(
        contract.LABEL_NAMES
    )
    assert 0.5 < found.confidence <= 1.0


@pytest.mark.parametrize("name", TWO_PEOPLE)
def test_two_people_are_counted_and_the_larger_analysed(faces_dir: Path, name: str) -> None:
    rgb = _rgb(faces_dir / name)
    found = geometry().analyse(rgb)
    assert found.faces_detected == 2
    widths = [d.box.width for d in FaceDetector().detect(rgb)[:2]]
    assert found.face_width_px >= 0.8 * min(widths)


@pytest.mark.parametrize("name", NONFACES)
def test_a_photo_of_neither_a_face_nor_skin_is_refused(nonfaces_dir: Path, name: str) -> None:
    with pytest.raises(NoFaceFound):
        _analyse(nonfaces_dir / name)


def test_keypoints_name_the_subjects_own_sides(faces_dir: Path) -> None:
    (detection, *_) = FaceDetector().detect(_rgb(faces_dir / "congress_C001091.jpg"))
    assert detection.keypoints.shape == (len(KEYPOINTS), 2)
    # The subject's right eye is on the image's left in an unmirrored portrait.
    assert detection.keypoint("right_eye")[0] < detection.keypoint("left_eye")[0]
    assert detection.keypoint("right_eye")[1] < detection.keypoint("mouth")[1]


def test_a_face_in_a_large_photo_is_found_in_its_pixels(faces_dir: Path) -> None:
    rgb = _rgb(faces_dir / "fr_biden_official_portrait_large.jpg")  # 970x2204, the face small in it
    found = geometry().analyse(rgb)
    box = found.box
    assert box.x >= 0 and box.x + box.width <= rgb.shape[1] and box.y + box.height <= rgb.shape[0]
    assert 250 < found.face_width_px < 500


def test_a_head_turned_past_the_mesh_is_a_profile_without_its_far_cheek() -> None:
    found = _analyse(data_dir("acne04", "train") / TURNED_AWAY)
    assert found.view == "profile"
    assert found.pose is not None and found.pose.yaw_deg < -45  # turned towards the image's left
    assert not found.mask.visible["right_cheek"] and found.mask.reasons["right_cheek"] == "turned_away"
    assert found.mask.visible["left_cheek"]


def test_a_profile_the_mesh_cannot_read_is_analysed_on_its_visible_side() -> None:
    found = _analyse(data_dir("acne04", "train") / UNREAD_PROFILE)
    assert found.view == "profile" and found.pose is None
    visible = [name for name, ok in found.mask.visible.items() if ok]
    assert visible in ([], ["left_cheek"], ["right_cheek"])
    assert found.mask.pixels[contract.OTHER_SKIN] > 5000, "the rest of its skin is still read"


def test_a_skin_closeup_is_one_skin_region() -> None:
    found = _analyse(data_dir("acne04", "train") / CLOSEUP)
    assert found.view == "closeup" and found.faces_detected == 0
    assert not any(found.mask.visible.values())
    assert found.mask.pixels[contract.OTHER_SKIN] > 0.4 * contract.FACE_SIZE_PX**2
    assert all(found.mask.pixels[name] == 0 for name in contract.REGION_NAMES)


def test_an_app_may_ask_for_a_face_or_a_closeup(faces_dir: Path) -> None:
    with pytest.raises(NoFaceFound):
        _analyse(data_dir("acne04", "train") / CLOSEUP, "face")
    # A turned head, read as a close-up when the app says so: one skin region, no face regions.
    closeup = _analyse(data_dir("acne04", "train") / TURNED_AWAY, "closeup")
    assert closeup.view == "closeup" and not any(closeup.mask.visible.values())
    # A portrait is not mostly skin: asked for as a close-up, it is refused rather than misread.
    with pytest.raises(NoFaceFound):
        _analyse(faces_dir / "congress_B001270.jpg", "closeup")
    with pytest.raises(ValueError, match="view"):
        _analyse(faces_dir / "congress_B001270.jpg", "sideways")


def test_greyscale_face_is_found(awkward_dir: Path) -> None:
    assert _analyse(awkward_dir / "grayscale" / "derived_face_gray_L.jpg").view in (
        "frontal",
        "three_quarter",
    )
