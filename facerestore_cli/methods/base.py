"""What every method's restorer is and returns."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import torch


@dataclass(frozen=True)
class Restoration:
    """One batch's result (diffusers returns `DDIMSchedulerOutput` the same way, rather than leaving it on an
    attribute): `images` [B, 3, S, S] in [0, 1]; `estimate` the method's own first restoration in [0, 1]
    (DifFace's e(y), ipc-guided's g_φ(x)) or None; `face_info` one dict per face of what the method used for
    it, taken where it was used (ipc-guided: the identity mask), empty when there is nothing to tell."""

    images: torch.Tensor
    estimate: torch.Tensor | None = None
    face_info: list[dict] = field(default_factory=list)

    def info(self, k: int) -> dict:
        return self.face_info[k] if k < len(self.face_info) else {}


class Restorer(Protocol):
    """What a method's `build` returns: aligned faces [B, 3, S, S] in [0, 1] (S: the preset's face size) and one
    generator per face in; the restoration out. `callback(event)` is called after every sampler step."""

    def restore(self, faces: torch.Tensor, generators: list[torch.Generator],
                callback: Callable[[dict], None] | None = None) -> Restoration: ...
