"""How far each pinned case's output moves between CPU kernel sets (the spread behind the pinned outputs'
tolerance, tests/pinned_outputs.py): runs every case in a fresh process per kernel setting and compares each with the
first setting's output.

    .venv/bin/python benchmarks/cross_kernel.py [--cases difface,ipc-guided] [--settings native,avx2,scalar,1-thread]
                                                [--json FILE]
    .venv/bin/python benchmarks/cross_kernel.py --full-size [--settings native,avx2] [--json FILE]

--full-size: the built-in presets with FULL-SIZE random networks in the official layouts (about 2.5 GB of files in
a temporary folder) on one aligned crop from ../shared, each with a short chain (FULL_SIZE_RUNS), compared the same
way. A few minutes per setting on a 2-core CPU.

Settings: native (whatever this CPU has), avx2 (ATen, oneDNN and MKL held to AVX2), scalar (ATen's default
non-vectorised kernels, oneDNN held to SSE4.1: the nearest this machine gets to another architecture's kernels),
1-thread (native kernels on one thread)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import ALIGNED_LQ  # noqa: E402
from homes import full_home  # noqa: E402
from pinned_outputs import CASES, KERNEL_SETTINGS as SETTINGS, run_cases_under  # noqa: E402


# preset → its arguments for the full-size runs: short chains (one UNet forward at 512 takes ~11 s on a 2-core CPU)
FULL_SIZE_RUNS = {
    "difface": ("--steps", "5"),
    "ipc-guided": ("--steps", "5"),
    "dr2": (),
    "diffbfr": ("--irm1-steps", "4", "--irm2-start-t", "1000", "--irm2-steps", "2", "--tem-start-t", "100",
                "--tem-steps", "2"),
}
FULL_SIZE_WEIGHTS = ("difface-unet", "difface-swinir", "arcface-ir-se50", "parsenet", "dr2-unet", "dr2-sparnethd",
                     "diffbfr-irm1", "diffbfr-irm2")


def run_full_size(name: str, home: Path, crop: Path, folder: Path) -> None:
    env = {**os.environ, **SETTINGS[name], "FACERESTORE_HOME": str(home), "FACERESTORE_OFFLINE": "1"}
    for preset, extra in FULL_SIZE_RUNS.items():
        out = folder / preset
        subprocess.run([sys.executable, "-m", "facerestore_cli", "run", str(crop), "-o", str(out), "--method", preset,
                        "--aligned", "--precision", "fp32", "--device", "cpu", "--format", "png", "-q", *extra],
                       env=env, check=True)


def full_size(settings: list[str]) -> dict:
    from PIL import Image

    crop = sorted(ALIGNED_LQ.glob("*.png"))[0]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        full_home(home, FULL_SIZE_WEIGHTS)
        for name in settings:
            run_full_size(name, home, crop, Path(tmp) / name)
        for preset in FULL_SIZE_RUNS:
            first = np.asarray(Image.open(Path(tmp) / settings[0] / preset / f"{crop.stem}.png").convert("RGB"))
            for name in settings[1:]:
                other = np.asarray(Image.open(Path(tmp) / name / preset / f"{crop.stem}.png").convert("RGB"))
                results[f"{preset} (full size): {settings[0]} vs {name}"] = {"face": spread(first, other)}
                print(f"{preset:11s} full size {settings[0]} vs {name:9s} face {spread(first, other)}", flush=True)
    return results


def spread(a: np.ndarray, b: np.ndarray) -> dict:
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
    return {"max_levels": int(diff.max()), "changed": round(float((diff > 0).mean()), 5),
            "over_1_level": round(float((diff > 1).mean()), 5)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", default=",".join(sorted(CASES)))
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument("--json", type=Path)
    parser.add_argument("--full-size", action="store_true")
    args = parser.parse_args()
    if args.full_size:
        results = full_size(args.settings.split(",") if args.settings != ",".join(SETTINGS) else ["native", "avx2"])
        if args.json:
            args.json.write_text(json.dumps(results, indent=1) + "\n")
        return
    cases, settings = args.cases.split(","), args.settings.split(",")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        runs = {}
        for name in settings:
            (Path(tmp) / name).mkdir()
            runs[name] = run_cases_under(name, cases, Path(tmp) / name)
        for case in cases:
            first = runs[settings[0]][case]
            for name in settings[1:]:
                other = runs[name][case]
                row = {part: spread(first[part], other[part]) for part in ("faces", "photo")}
                results[f"{case}: {settings[0]} vs {name}"] = row
                print(f"{case:11s} {settings[0]} vs {name:9s} faces {row['faces']}  photo {row['photo']}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
