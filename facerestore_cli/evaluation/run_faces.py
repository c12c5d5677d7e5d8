"""`eval --run OUT`: every restored face of a real run, judged without ground truth. Each face is cut again from the
input photo and from the output (at the run's --upscale) with the landmarks its record kept, so the pair is the
crop the method saw and the face as it was pasted back."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facerestore_cli.errors import NoInputsError, UsageError
from facerestore_cli.evaluation.measure import read_rgb
from facerestore_cli.faces.align import estimate_affine, warp_face
from facerestore_cli.state import RunState

FACE_PX = 512


@dataclass(frozen=True)
class RunFace:
    key: str  # "<input relative path> face <index>"
    input: Path
    restored: Path
    landmarks: tuple | None  # in the input's pixels; None: the input is an aligned face (--aligned)
    upscale: int


def run_faces(out: Path) -> list[RunFace]:
    """The restored faces OUT's run state records, in input order."""
    if not out.is_dir():
        raise UsageError(f"--run {out} is not a folder")
    state = RunState.load(out)
    faces = []
    for rel, entry in sorted(state.entries.items()):
        record = entry.get("record") or {}
        if entry.get("status") != "done" or record.get("status") != "restored":
            continue
        parameters = record.get("parameters") or {}
        output = out / entry["output"]
        for face in record.get("faces") or []:
            landmarks = face.get("landmarks")
            faces.append(RunFace(f"{rel} face {face['index']}", Path(record["input"]), output,
                                 None if parameters.get("aligned") else tuple(map(tuple, landmarks)),
                                 int(parameters.get("upscale") or 1)))
    if not faces:
        raise NoInputsError(f"--run {out}: its run state records no restored face",
                            hint="point --run at the output folder of a finished `facerestore run`")
    return faces


class FaceCropper:
    """Loads a RunFace as (key, restored crop, None, input crop), reading each photo once for its faces."""

    def __init__(self):
        self._cached: dict[Path, np.ndarray] = {}

    def _image(self, path: Path) -> np.ndarray:
        if path not in self._cached:
            if len(self._cached) == 2:  # keep the input and the output of the photo at hand
                self._cached.pop(next(iter(self._cached)))
            self._cached[path] = read_rgb(path)
        return self._cached[path]

    def __call__(self, face: RunFace):
        source, restored = self._image(face.input), self._image(face.restored)
        if face.landmarks is None:
            return face.key, restored, None, source
        points = np.asarray(face.landmarks, np.float64)
        return (face.key, warp_face(restored, estimate_affine(points * face.upscale, FACE_PX), FACE_PX), None,
                warp_face(source, estimate_affine(points, FACE_PX), FACE_PX))
