"""The benchmark's built-in photos: made on the fly from one bundled public-domain portrait, so `facerestore bench`
needs no download and measures the same pictures everywhere.

The portrait is NASA's photo of astronaut Eileen Collins (NASA Great Images; "No known copyright restrictions,
released into the public domain"), as scikit-image ships it (skimage.data.astronaut, 512×512). The set covers the
three shapes of an archive: single portraits of many sizes, group photos, and 12- and 20-megapixel scans, two of them
with many small faces.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ASTRONAUT = Path(__file__).parent / "assets" / "astronaut.jpg"
SCAN_SIZE = (4000, 3000)  # 12 megapixels
LARGE_SCAN_SIZE = (5200, 3900)  # 20 megapixels


@dataclass(frozen=True)
class Shot:
    name: str
    size: tuple[int, int]  # width, height
    faces: tuple[tuple[int, int, int], ...]  # per copy of the portrait: x, y, side in pixels


def builtin_shots() -> list[Shot]:
    """The set: 6 portraits from 190 to 1,920 px, 2 group photos (4 and 6 faces), 2 scans of 12 MP (3 and 4 faces)
    and 2 of 20 MP with many small faces (21 and 72)."""
    portraits = [Shot(f"portrait-{side:04d}.jpg", (side, side), ((0, 0, side),))
                 for side in (190, 320, 512, 768, 1280, 1920)]
    groups = [
        Shot("group-4.jpg", (1600, 900), ((40, 200, 380), (420, 180, 400), (830, 220, 360), (1200, 160, 380))),
        Shot("group-6.jpg", (1800, 1000), tuple((30 + 295 * i, 120 + 260 * (i % 2), 280) for i in range(6))),
    ]
    scans = [
        Shot("scan-3.jpg", SCAN_SIZE, ((300, 500, 1100), (1500, 700, 1000), (2700, 400, 1150))),
        Shot("scan-4.jpg", SCAN_SIZE, ((200, 300, 900), (1150, 1500, 950), (2200, 350, 900), (3000, 1700, 850))),
    ]
    # a class photo and a crowd scanned at 20 MP: faces of 12-26 px between the eyes, which a capped
    # detection copy loses
    small = [
        Shot("scan-class-20mp.jpg", LARGE_SCAN_SIZE,
             tuple((250 + 620 * col, 500 + 900 * row, 300 - 25 * row) for row in range(3) for col in range(7))),
        Shot("scan-crowd-20mp.jpg", LARGE_SCAN_SIZE,
             tuple((150 + 410 * col + 60 * (row % 2), 300 + 560 * row, 210 - 12 * row) for row in range(6)
                   for col in range(12))),
    ]
    return portraits + groups + scans + small


def write_builtin_set(folder: Path, seed: int = 0) -> list[Path]:
    """Render the built-in set into folder as JPEG (quality 92); the same files for the same seed."""
    import cv2
    import numpy as np

    portrait = cv2.imread(str(ASTRONAUT), cv2.IMREAD_COLOR)
    if portrait is None:
        raise FileNotFoundError(f"bundled benchmark portrait missing: {ASTRONAUT}")
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for shot in builtin_shots():
        width, height = shot.size
        paper = np.array([176, 196, 212], np.float32)  # BGR of an aged print
        gradient = np.linspace(0.85, 1.05, width, dtype=np.float32)[None, :, None]
        canvas = np.broadcast_to(paper * gradient, (height, width, 3)).copy()
        for x, y, side in shot.faces:
            face = cv2.resize(portrait, (side, side), interpolation=cv2.INTER_AREA if side < 512 else cv2.INTER_CUBIC)
            canvas[y: y + side, x: x + side] = face[: height - y, : width - x]
        canvas += rng.normal(0, 6, canvas.shape[:2])[:, :, None].astype(np.float32)  # film grain
        path = folder / shot.name
        cv2.imwrite(str(path), np.clip(canvas, 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 92])
        paths.append(path)
    return paths
