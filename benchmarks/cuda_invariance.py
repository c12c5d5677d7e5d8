"""Is a face's result on CUDA independent of its batch neighbours (same batch shape), and at what cost? One full-size
DifFace UNet (random weights), batches of 4 at 512: for each precision and cuDNN setting, whether the same batch
twice gives the same bits (run-to-run determinism), whether a face gives the same bits beside other faces, the
largest difference relative to the output's largest value, and the time of one forward. Prints one JSON line per
setting (benchmarks/gpu-check.sh saves them).

    python benchmarks/cuda_invariance.py
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def unet():
    from facerestore_cli.archs import build_arch
    from facerestore_cli.weights.registry import get_spec

    torch.manual_seed(0)
    return build_arch("unet", get_spec("difface-unet").config).eval().requires_grad_(False).cuda()


def measure(model, precision: str, deterministic: bool, tf32: bool) -> dict:
    from facerestore_cli.device import resolve

    compute = resolve("cuda", precision)  # first: it sets fp32's own cuDNN setting, which this script overrides
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.allow_tf32 = tf32
    torch.manual_seed(2)
    face, a, b = (torch.randn(1, 3, 512, 512, device="cuda") for _ in range(3))
    t = torch.full((4,), 300, device="cuda")
    with torch.no_grad(), compute.autocast():
        first = model(torch.cat([face, a, b, a]), t)
        again = model(torch.cat([face, a, b, a]), t)
        moved = model(torch.cat([b, b, face, a]), t)
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(5):
            model(torch.cat([face, a, b, a]), t)
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / 5
    scale = first[0].float().abs().max().item()
    return {"precision": precision, "cudnn_deterministic": deterministic, "cudnn_tf32": tf32,
            "same_batch_twice_equal": torch.equal(first, again),
            "beside_other_faces_equal": torch.equal(first[0], moved[2]),
            "max_relative_difference": (first[0].float() - moved[2].float()).abs().max().item() / scale,
            "forward_seconds_batch4": round(seconds, 4)}


def main() -> None:
    model = unet()
    for precision in ("fp32", "bf16"):
        for deterministic, tf32 in ((False, True), (True, True), (False, False), (True, False)):
            print(json.dumps(measure(model, precision, deterministic, tf32)), flush=True)


if __name__ == "__main__":
    main()
