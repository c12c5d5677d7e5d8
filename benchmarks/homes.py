"""Weights homes for the benchmarks (no weight can be downloaded on the benchmark machines).

    python benchmarks/homes.py tiny DIR   # the test suite's tiny networks + tiny presets (difface, dr2)
    python benchmarks/homes.py full DIR   # FULL-SIZE random networks in the official checkpoint layouts

Both hold the real RetinaFace mobile0.25 weights from ../shared (random detector weights would find no face). Tiny:
the suite's own tiny home (no ParseNet: faces are pasted with the square mask, so the pipeline's own work is what is
timed). Full size: difface (UNet + SwinIR), dr2 (UNet, P2 UNet, SPARNetHD), ParseNet and ArcFace, each initialised by
PyTorch's defaults: the outputs are noise, the cost of every forward is the real one; and LPIPS's (seeded AlexNet, the
real v0.1 linear layers).
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


def full_home(home: Path, ids: tuple[str, ...] = FULL_SIZE) -> None:
    """Full-size networks `ids`, PyTorch's default initialisation (seeded per file), each in its registry entry's layout
    (nested key, "module." prefix); SPARNetHD's spectral-norm u/v buffers settled by a forward in train mode."""
    import torch

    from conftest import RETINA_MOBILE, write_lpips_weights
    from facerestore_cli.archs import build_arch
    from facerestore_cli.weights.registry import get_spec

    weights = home / "weights"
    weights.mkdir(parents=True, exist_ok=True)
    for seed, weight_id in enumerate(ids):
        spec = get_spec(weight_id)
        torch.manual_seed(seed)
        model = build_arch(spec.arch, spec.config)
        if spec.arch == "sparnethd":
            with torch.no_grad():
                model.train()(torch.rand(1, 3, spec.config["size"], spec.config["size"]) * 2 - 1)
        state = {(spec.strip_prefix or "") + k: v for k, v in model.eval().state_dict().items()}
        torch.save({spec.nested_key: state} if spec.nested_key else state, weights / spec.file)
        del model, state
        gc.collect()
    shutil.copy(RETINA_MOBILE, weights / RETINA_MOBILE.name)
    write_lpips_weights(weights)  # training's validation scores and ipc-mask's objective


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("tiny", "full"):
        sys.exit(__doc__)
    target = Path(sys.argv[2])
    (tiny_home if sys.argv[1] == "tiny" else full_home)(target)
    print(f"{sys.argv[1]} home written to {target}")
