"""Weights homes for the benchmarks (no weight can be downloaded on the benchmark machines).

    python benchmarks/homes.py tiny DIR   # the test suite's tiny networks + tiny presets (difface, dr2)
    python benchmarks/homes.py full DIR   # FULL-SIZE random networks in the official checkpoint layouts

Both hold the real RetinaFace mobile0.25 weights from ../shared (random detector weights would find no face). Tiny:
the suite's own tiny home (no ParseNet: faces are pasted with the square mask, so the pipeline's own work is what is
timed). Full size: difface (UNet + SwinIR), dr2 (UNet, P2 UNet, SPARNetHD), ParseNet and ArcFace, each initialised by
PyTorch's defaults: the outputs are noise, the cost of every forward is the real one.
"""

from __future__ import annotations

import gc
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

FULL_SIZE = ("difface-unet", "difface-swinir", "dr2-unet", "p2-ffhq", "dr2-sparnethd", "parsenet", "arcface-ir-se50")


def tiny_home(home: Path) -> None:
    from conftest import RETINA_MOBILE, make_tiny_dr2_weights, make_tiny_weights, write_tiny_dr2_preset, write_tiny_preset

    weights = home / "weights"
    make_tiny_weights(weights)
    make_tiny_dr2_weights(weights)
    shutil.copy(RETINA_MOBILE, weights / RETINA_MOBILE.name)
    write_tiny_preset(home / "difface-tiny.yaml")
    write_tiny_dr2_preset(home / "dr2-tiny.yaml")


def full_home(home: Path) -> None:
    import torch

    from conftest import RETINA_MOBILE
    from facerestore_cli.archs import build_arch
    from facerestore_cli.weights.registry import get_spec

    weights = home / "weights"
    weights.mkdir(parents=True, exist_ok=True)
    for weight_id in FULL_SIZE:
        spec = get_spec(weight_id)
        torch.manual_seed(0)
        state = build_arch(spec.arch, spec.config).state_dict()
        if weight_id in ("difface-unet", "difface-swinir"):
            state = {"module." + k: v for k, v in state.items()}
        torch.save({spec.nested_key: state} if spec.nested_key else state, weights / spec.file)
        del state
        gc.collect()
    shutil.copy(RETINA_MOBILE, weights / RETINA_MOBILE.name)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("tiny", "full"):
        sys.exit(__doc__)
    target = Path(sys.argv[2])
    (tiny_home if sys.argv[1] == "tiny" else full_home)(target)
    print(f"{sys.argv[1]} home written to {target}")
