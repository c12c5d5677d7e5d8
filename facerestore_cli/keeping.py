"""Which restoration of a face is kept, and whether it is pasted at all (--samples, --select, --min-identity,
--fallback): identity drift is judged with the ArcFace cosines the identity scorer gives every sample.

A face restored K times keeps the sample with the highest cosine to its input crop (`--select identity`) or to the
method's own estimate (`--select estimate`); ties keep the lowest k. The kept face is then gated: below
--min-identity T (its cosine to the input) it is not pasted — the photo keeps the original face (`--fallback
original`) or gets the method's estimate (`--fallback estimate`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SCORE_OF = {"identity": "vs_input", "estimate": "vs_estimate"}


@dataclass
class Sample:
    """One restoration of a face: its image (H×W×3 float32 [0, 1]), the estimate beside it (or None), ParseNet's
    labels of it (or None), what the method used for it, its identity cosines and its noise seed."""

    k: int
    seed: int
    image: Any
    estimate: Any
    labels: Any
    info: dict
    identity: dict | None


def keep(face, samples: list[Sample], select: str, min_identity: float | None, fallback: str) -> None:
    """Set the face's restoration from its samples: the kept one, its report fields, and the gate's verdict."""
    chosen = samples[0]
    if len(samples) > 1:
        score = SCORE_OF[select]
        chosen = max(samples, key=lambda s: (s.identity[score], -s.k))
        face.samples = [{"k": s.k, "seed": s.seed, "identity": _rounded(s.identity)} for s in samples]
        face.kept = chosen.k
    face.restored, face.parse_labels, face.method_info = chosen.image, chosen.labels, chosen.info
    face.seed, face.identity, face.estimate = chosen.seed, _rounded(chosen.identity), chosen.estimate
    face.sample_images = [s.image for s in samples] if len(samples) > 1 else None
    if min_identity is None:
        return
    identity = chosen.identity["vs_input"]
    below = identity < min_identity
    face.gate = {"identity": round(identity, 4), "threshold": min_identity,
                 "action": fallback if below else "pasted"}
    if below and fallback == "estimate":
        face.restored, face.parse_labels = chosen.estimate, None


def _rounded(scores: dict | None) -> dict | None:
    return None if scores is None else {name: round(value, 4) for name, value in scores.items()}


def is_left_out(face) -> bool:
    """A gated face whose photo keeps its original pixels."""
    return bool(face.gate) and face.gate["action"] == "original"
