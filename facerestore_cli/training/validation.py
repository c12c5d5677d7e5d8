"""What a training run scores with each validation grid (`--sample-every`): the EMA network's restorations of the
fixed validation faces against their HQ, by the evaluation code (`facerestore eval`'s metrics): PSNR (basicsr's, RGB,
no border crop) and LPIPS (AlexNet, v0.1 linear layers), each the mean over the faces. A run that does not learn
shows it in RUN/metrics.jsonl (and TensorBoard) long before its end."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from facerestore_cli.device import Compute
from facerestore_cli.evaluation.metrics import psnr
from facerestore_cli.evaluation.networks import LPIPS_WEIGHTS, lpips_model
from facerestore_cli.networks import NetworkLoader
from facerestore_cli.pixels import from_float
from facerestore_cli.weights.store import WeightStore


class ValidationScores:
    def __init__(self, device: torch.device, say: Callable[[str], None]):
        store = WeightStore()
        missing = [wid for wid in LPIPS_WEIGHTS["alex"] if not store.is_present(wid)]
        self.lpips = None
        if missing:
            say(f"validation LPIPS not measured: {', '.join(missing)} missing from the weights cache (see "
                f"`facerestore weights show {missing[0]}`); PSNR only")
        else:
            self.lpips = lpips_model(NetworkLoader(store, Compute(device, "fp32")), "alex")

    @torch.no_grad()
    def __call__(self, restored01: torch.Tensor, hq01: torch.Tensor) -> dict:
        """{"val_psnr": dB, "val_lpips": distance or None} of restorations and HQ ([B, 3, H, W] in [0, 1])."""
        restored, truth = (from_float(images.permute(0, 2, 3, 1).float().cpu().numpy(), np.uint8)
                           for images in (restored01, hq01))
        scores = {"val_psnr": round(float(np.mean([psnr(r, t, 0, False) for r, t in zip(restored, truth)])), 3),
                  "val_lpips": None}
        if self.lpips is not None:
            distance = self.lpips(restored01.float() * 2 - 1, hq01.float() * 2 - 1)
            scores["val_lpips"] = round(float(distance.mean()), 4)
        return scores
