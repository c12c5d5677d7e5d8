"""Does `facerestore eval` stream? Peak memory of a 300- and a 3,000-pair eval in fresh processes (PSNR, SSIM and
LPIPS with its AlexNet, random weights in the official layout; FID's running moments are a fixed 2048² float64),
written to benchmarks/results/eval-scale-DATE/result.json.

    python benchmarks/eval_scale.py [--size 256] [--counts 300 3000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]


def make_sets(root: Path, count: int, size: int) -> tuple[Path, Path]:
    """count ground-truth faces (the shared HQ faces, shifted and recoloured) and noisy restorations of them."""
    import numpy as np
    from PIL import Image

    from conftest import SHARED

    sources = [np.asarray(Image.open(p).convert("RGB").resize((size, size))) for p in
               sorted((SHARED / "data" / "aligned-hq-ish").glob("*.png"))]
    truth, restored = root / f"gt-{count}", root / f"restored-{count}"
    truth.mkdir(), restored.mkdir()
    rng = np.random.default_rng(count)
    for i in range(count):
        face = np.roll(sources[i % len(sources)], int(rng.integers(-8, 8)), axis=1).astype(np.int16)
        face = np.clip(face + rng.integers(-20, 20, 3), 0, 255).astype(np.uint8)
        Image.fromarray(face).save(truth / f"{i:05d}.png")
        noisy = np.clip(face + rng.normal(0, 8, face.shape), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(restored / f"{i:05d}.png")
    return truth, restored


def peak_of(args: list[str], env: dict) -> tuple[float, float]:
    """(peak resident set size in MiB, seconds) of `facerestore ARGS` in a fresh process."""
    code = ("import resource, sys; from facerestore_cli.cli import main\n"
            "try:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n    code = e.code\n"
            "print('PEAK', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, file=sys.stderr)\n"
            "sys.exit(code)\n")
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    peak = [float(line.split()[1]) for line in done.stderr.splitlines() if line.startswith("PEAK")]
    if done.returncode or not peak:
        raise SystemExit(f"eval failed: {done.stderr[-1500:]}")
    return peak[0], seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--counts", type=int, nargs="+", default=[300, 3000])
    args = parser.parse_args()
    from conftest import write_metric_weights

    out = REPO / "benchmarks" / "results" / f"eval-scale-{time.strftime('%Y-%m-%d')}"
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_metric_weights(root / "home" / "weights")
        env = {**os.environ, "FACERESTORE_HOME": str(root / "home"), "FACERESTORE_OFFLINE": "1"}
        result = {"size": args.size, "metrics": "psnr,ssim,lpips", "cpu": os.cpu_count(), "runs": []}
        for count in args.counts:
            truth, restored = make_sets(root, count, args.size)
            peak, seconds = peak_of(["eval", str(restored), "--gt", str(truth), "--metrics", "psnr,ssim,lpips",
                                     "--per-image", str(root / f"per-{count}.jsonl"), "-q", "--device", "cpu"], env)
            result["runs"].append({"pairs": count, "peak_rss_mib": round(peak, 1), "seconds": round(seconds, 1)})
            print(json.dumps(result["runs"][-1]), flush=True)
    (out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    print(out / "result.json")


if __name__ == "__main__":
    main()
