"""A run's face settings: how faces are found, which are restored, and how they go back into the photo.

Each preset states its settings in a `faces:` block (the diffusion presets: DifFace's official front end, see
`FaceSettings`); the run's flags override them (each flag declared once, on its field). Faces are numbered by
detection order (left to right), before any is left out, so the numbers the report, the compare sheet and
`--draw-boxes` show are the ones `--faces` takes. Free of numpy and torch: `run --help` reads it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

from facerestore_cli.errors import UsageError
from facerestore_cli.settings import FACES, PASTE, merge, setting, settings_of

EYE_DISTANCE_SHORT_SIDE = 512  # DifFace measures eye distance on the photo scaled up so its short side is ≥ 512
BG_UPSAMPLERS = ("realesrgan", "bicubic", "none")
UPSCALES = (1, 2, 4)
SELECTIONS = ("all", "center", "largest")


def parse_indices(text: str | None) -> tuple[int, ...] | None:
    """--faces "0,2" → (0, 2)."""
    if text is None:
        return None
    try:
        indices = tuple(sorted({int(part) for part in text.split(",") if part.strip()}))
    except ValueError:
        raise UsageError(f"--faces takes comma-separated face numbers, e.g. --faces 0,2, not '{text}'") from None
    if not indices:
        raise UsageError("--faces names no face", hint="e.g. --faces 0,2")
    return indices


@dataclass(frozen=True)
class FaceSettings:
    """Defaults are facexlib's FaceRestoreHelper (GFPGAN, CodeFormer); a preset without a `faces:` block gets them.

    det_threshold: detector score a face needs; det_min_side: detection runs on a copy scaled up (bilinear) so its
    short side is at least this (0: never scaled up); eye_distance: faces whose eyes are closer than this many px,
    measured on the photo scaled up to a 512-px short side, are left out (side views, specks); min_face: faces whose
    box is smaller than this many px of the photo are left out; min_score: faces scoring below it are left out;
    select: all, or only the center face / the largest face; indices: only these detection numbers (None: all);
    upscale: the output is this many times the input; bg_upsampler: what enlarges the photo under the faces;
    bg_tile: Real-ESRGAN's tile size in px (0: the whole photo at once); blend: weight of the restored face against
    its input crop; draw_boxes: also write a copy of the output with numbered boxes.
    """

    det_threshold: float = setting("--det-threshold", default=0.97, panel=FACES, metavar="P", photo_only=True,
                                   help="Detector score a face needs (diffusion presets 0.8, as DifFace; facexlib "
                                        "0.97).", preset_default=True)
    det_min_side: int = setting("--det-min-side", default=0, panel=FACES, metavar="PX", min=0, photo_only=True,
                                help="Detect on a copy scaled up so its short side is at least PX (diffusion presets "
                                     "640; 0: never scale up).", preset_default=True)
    eye_distance: float = setting(default=0.0, min=0.0)
    min_face: int = setting("--min-face", default=20, panel=FACES, metavar="PX", min=0, photo_only=True,
                            help="Leave out faces whose box is smaller than PX (diffusion presets 0: faces whose eyes "
                                 "are under 5 px apart at a 512-px short side are left out instead).",
                            preset_default=True)
    min_score: float = setting("--min-score", default=0.0, panel=FACES, metavar="P", min=0, max=1, photo_only=True,
                               help="Leave out faces the detector scored below P (diffusion presets 0.97, "
                                    "facexlib's threshold; DifFace's 0.8 restores a hand in a test photo).",
                               preset_default=True)
    select: str = setting(default="all", choices=SELECTIONS)
    indices: tuple[int, ...] | None = setting("--faces", default=None, panel=FACES, metavar="0,2", photo_only=True,
                                              parse=parse_indices, preset_default=True,
                                              help="Restore only these faces, numbered as the report and --draw-boxes "
                                                   "number them (left to right).")
    upscale: int = setting("--upscale", default=1, panel=PASTE, metavar="1|2|4", choices=UPSCALES,
                           help="Write photos N times larger: the background enlarged by --bg-upsampler, the faces "
                                "pasted at N× (default 1).", preset_default=True)
    bg_upsampler: str = setting("--bg-upsampler", default="realesrgan", panel=PASTE, metavar="NAME",
                                choices=BG_UPSAMPLERS, photo_only=True, preset_default=True,
                                help="realesrgan (Real-ESRGAN x2plus/x4plus, as DifFace's sampler), bicubic, or none "
                                     "(bilinear, as facexlib without one).")
    bg_tile: int = setting("--bg-tile", default=400, panel=PASTE, metavar="PX", photo_only=True, preset_default=True,
                           help="Real-ESRGAN tile size (default 400, 10 px overlap; 0: whole photo).")
    blend: float = setting("--blend", default=1.0, panel=PASTE, metavar="W", min=0, max=1, preset_default=True,
                           help="Mix each restored face with its input before paste-back: 1 restored only (default), "
                                "0 the input.")
    draw_boxes: bool = setting("--draw-boxes", default=False, panel=PASTE, photo_only=True, preset_default=True,
                               run_only=True,
                               help="Also write a copy of each output with numbered face boxes under OUT/_boxes/ "
                                    "(green restored, red left out).")

    @classmethod
    def from_block(cls, block: Mapping[str, Any], source: str) -> FaceSettings:
        """A preset's `faces:` block, coerced and checked (the defaults where it is silent)."""
        specs = settings_of(cls)
        unknown = sorted(set(block) - {s.name for s in specs})
        if unknown:
            raise UsageError(f"preset {source}: unknown faces setting(s) {', '.join(unknown)}",
                             hint=f"known: {', '.join(s.name for s in specs)}")
        where = lambda s: f"preset {source}: faces.{s.name}" + (f" ({s.flag})" if s.flag else "")  # noqa: E731
        settings = cls(**merge(specs, block, {}, where, whole_floats=True))
        settings.check()
        return settings

    def given(self, values: Mapping[str, Any]) -> FaceSettings:
        """These settings with the values given on the command line over them (name → value, None: not given),
        coerced and checked."""
        settings = dataclasses.replace(self, **merge(settings_of(type(self)), {}, values, lambda s: s.name))
        settings.check()
        return settings

    def check(self) -> None:
        if not 0.0 <= self.det_threshold < 1.0:
            raise UsageError(f"--det-threshold must be in [0, 1), not {self.det_threshold}")
        if self.select != "all" and self.indices is not None:
            raise UsageError("--faces cannot be combined with --only-center-face or --largest-face")
        if self.indices is not None and (not self.indices or min(self.indices) < 0):
            raise UsageError("--faces takes face numbers 0, 1, 2, ... as the report numbers them, e.g. --faces 0,2")
        if self.bg_tile < 0 or 0 < self.bg_tile < 32 or self.bg_tile % 2:
            raise UsageError(f"--bg-tile must be 0 (no tiling) or an even number of px ≥ 32, not {self.bg_tile}",
                             hint="Real-ESRGAN x2 reads pixels in 2×2 blocks, so tiles have even sides")

    def as_record(self, aligned: bool = False) -> dict:
        """The settings that shape an output (not draw_boxes, an extra file); the background's only at --upscale 2/4;
        with --aligned only blend and upscale apply, the rest are None."""
        record = dataclasses.asdict(self)
        record["indices"] = None if self.indices is None else list(self.indices)
        del record["draw_boxes"]
        if self.upscale == 1:
            record["bg_upsampler"] = record["bg_tile"] = None
        if aligned:
            record = {k: (v if k in ("blend", "upscale") else None) for k, v in record.items()}
        return record

    @property
    def background(self) -> str | None:
        """What enlarges the photo under the faces, None at --upscale 1."""
        return None if self.upscale == 1 else self.bg_upsampler
