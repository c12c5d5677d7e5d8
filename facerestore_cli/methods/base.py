"""What every method returns: the restored faces and what it actually used to make them."""

from __future__ import annotations

from dataclasses import dataclass, field

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
