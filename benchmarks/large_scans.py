"""Large scans (#24): `facerestore bench --reference` on six photos of 10-20 MP with the suite's tiny networks and
RetinaFace mobile0.25 — the four photos of ../shared with faces enlarged to scan size and the built-in set's two 20-MP
scans of small faces — at the default (full-resolution detection) and at `--detect-max-side 2048`; and the CPU
batch rule: the tiny restorer's time per face at batch 1, 2, 4 and 8. Results in
benchmarks/results/large-scans-DATE/ (default.json, capped-2048.json, cpu-batch.json, and the printed tables).

    python benchmarks/large_scans.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

ENLARGED = {"group-of-eight.jpg": 4000, "whole-02.png": 4800, "whole-03.png": 3600, "old-portrait-00.jpg": 4400}


def make_scans(folder: Path) -> None:
    import cv2

    from conftest import PHOTOS
    from facerestore_cli.benchset import write_builtin_set

    folder.mkdir(parents=True)
    for name, width in ENLARGED.items():
        image = cv2.imread(str(PHOTOS / name))
        height = round(image.shape[0] * width / image.shape[1])
        cv2.imwrite(str(folder / (Path(name).stem + ".jpg")),
                    cv2.resize(image, (width, height), interpolation=cv2.INTER_CUBIC), [cv2.IMWRITE_JPEG_QUALITY, 92])
    built = folder / "builtin"
    for path in write_builtin_set(built):
        if "20mp" in path.name:
            path.rename(folder / path.name)
    for path in built.iterdir():
        path.unlink()
    built.rmdir()


def cpu_batch(home: Path) -> dict:
    """Seconds per face of the tiny difface restorer at batch 1, 2, 4, 8 (each timed for at least 5 s)."""
    import torch

    from facerestore_cli import presets
    from facerestore_cli.device import resolve
    from facerestore_cli.methods import method_for
    from facerestore_cli.networks import NetworkLoader
    from facerestore_cli.weights.store import WeightStore

    preset = presets.load_file(home / "difface-tiny.yaml")
    method = method_for(preset)
    restorer = method.build(preset, method.Params.resolve(preset, {}),
                            NetworkLoader(WeightStore(offline=True), resolve("cpu")))
    per_face = {}
    for batch in (1, 2, 4, 8):
        faces = torch.rand(batch, 3, preset.face_size, preset.face_size)
        generators = [torch.Generator().manual_seed(k) for k in range(batch)]
        restorer.restore(faces, generators)
        started, calls = time.perf_counter(), 0
        while time.perf_counter() - started < 5:
            restorer.restore(faces, generators)
            calls += 1
        per_face[batch] = round((time.perf_counter() - started) / calls / batch, 4)
    return {"face_size": preset.face_size, "seconds_per_face": per_face}


def main() -> None:
    from homes import tiny_home

    out = REPO / "benchmarks" / "results" / f"large-scans-{date.today().isoformat()}"
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="large-scans-") as tmp:
        work = Path(tmp)
        tiny_home(work / "home")
        make_scans(work / "scans")
        env = {**os.environ, "FACERESTORE_HOME": str(work / "home"), "FACERESTORE_OFFLINE": "1"}
        common = [sys.executable, "-m", "facerestore_cli", "bench", str(work / "scans"), "--preset",
                  str(work / "home" / "difface-tiny.yaml"), "--detector", "retinaface_mobile0.25", "--reference",
                  "--no-startup"]
        for name, extra in (("default", []), ("capped-2048", ["--detect-max-side", "2048"])):
            text = subprocess.run([*common, *extra, "--save", str(out / f"{name}.json")], env=env, check=True,
                                  capture_output=True, text=True).stdout
            (out / f"{name}.txt").write_text(text)
            print(f"== {name}\n{text}")
        os.environ.update(FACERESTORE_HOME=str(work / "home"), FACERESTORE_OFFLINE="1")
        batch = cpu_batch(work / "home")
        (out / "cpu-batch.json").write_text(json.dumps(batch, indent=2) + "\n")
        print(json.dumps(batch))


if __name__ == "__main__":
    main()
