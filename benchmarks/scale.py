"""Scale: does a long run stay flat? (#19; a benchmark, not a test)

    .venv/bin/python benchmarks/scale.py [--photos 10000] [--files 100000] [--json FILE]

1. `facerestore run` over --photos small synthetic aligned faces (64 px, each different) with tiny networks at a 64-px
   face size and one step, so the pipeline's own work per photo (read, state, report, write) is a large share: the
   seconds per photo over the first and the last thousand (from the time each output path reaches stdout through
   --print-outputs), the process's RSS sampled every 0.2 s (each thousand's peak, and the run's), the state file's
   and the report's size.
2. The rerun (`--dry-run` over the finished output folder: every photo planned as a skip).
3. --files empty-content image files (named .png, one byte each) in 100 folders: discovery alone (in this process)
   and a `--dry-run` of them (a subprocess; every file planned as to do).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

FACE = 64
UNET_64 = {"image_size": FACE, "in_channels": 3, "model_channels": 32, "out_channels": 6, "num_res_blocks": 1,
           "attention_sizes": [16], "channel_mult": [1, 1, 2], "num_head_channels": 16, "use_scale_shift_norm": True,
           "resblock_updown": False}


def scale_home(home: Path) -> Path:
    """Tiny DifFace networks at a 64-px face size in the official layouts, and their preset."""
    from conftest import randomize, write_derived_preset, write_official_layout
    from facerestore_cli.archs import build_arch
    from tiny_configs import TINY_SWINIR

    weights = home / "weights"
    weights.mkdir(parents=True)
    write_official_layout(randomize(build_arch("unet", UNET_64), 1), weights / "iddpm_ffhq512_ema500000.pth", None)
    write_official_layout(randomize(build_arch("swinir_difface", TINY_SWINIR), 2),
                          weights / "swinir_restoration512_L1.pth", "state_dict")
    return write_derived_preset(home / "difface-64.yaml", "difface", "difface-64", FACE,
                                {"estimator": TINY_SWINIR, "prior": UNET_64}, {"steps": 1})


def make_photos(folder: Path, count: int) -> None:
    from PIL import Image

    from conftest import ALIGNED_LQ

    crops = [np.asarray(Image.open(p).convert("RGB").resize((FACE, FACE))) for p in sorted(ALIGNED_LQ.glob("*.png"))]
    for i in range(count):
        sub = folder / f"box{i // 1000:03}"
        sub.mkdir(parents=True, exist_ok=True)
        tint = np.array([i % 7, (i // 7) % 7, (i // 49) % 7], np.uint8)
        Image.fromarray(crops[i % len(crops)] // 2 + tint * 8).save(sub / f"p{i:06}.png")


class RssSampler(threading.Thread):
    """The RSS of process `pid` every 0.2 s, as (seconds since start, MiB)."""

    def __init__(self, pid: int, started: float):
        super().__init__(daemon=True)
        self.pid, self.started, self.samples, self.done = pid, started, [], threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            try:
                status = Path(f"/proc/{self.pid}/status").read_text()
            except OSError:
                return
            rss = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS")), None)
            if rss is None:  # exited, not yet reaped
                return
            self.samples.append((time.monotonic() - self.started, rss / 1024))
            self.done.wait(0.2)


def timed_run(args: list[str], env: dict) -> tuple[list[float], list[tuple[float, float]], float]:
    """Run the CLI; the time each stdout line arrived, the RSS samples, the wall time."""
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "facerestore_cli", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    sampler = RssSampler(proc.pid, started)
    sampler.start()
    arrivals = [time.monotonic() - started for _line in proc.stdout]
    code = proc.wait()
    sampler.done.set()
    sampler.join()
    if code != 0:
        raise SystemExit(f"facerestore {' '.join(args[:2])} … exited {code}")
    return arrivals, sampler.samples, time.monotonic() - started


def per_thousand(arrivals: list[float], samples: list[tuple[float, float]]) -> list[dict]:
    rows, previous = [], 0.0
    for k in range(0, len(arrivals), 1000):
        block = arrivals[k:k + 1000]
        rss = [mib for t, mib in samples if previous <= t <= block[-1]] or [float("nan")]
        rows.append({"photos": f"{k + 1}-{k + len(block)}", "s_per_photo": round((block[-1] - previous) / len(block), 4),
                     "peak_rss_mib": round(max(rss), 1)})
        previous = block[-1]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--photos", type=int, default=10_000)
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--json", type=Path)
    opts = parser.parse_args()
    result = {"machine": f"{os.cpu_count()} CPUs, {os.uname().machine}", "photos": opts.photos, "files": opts.files}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        preset = scale_home(work / "home")
        env = {**os.environ, "FACERESTORE_HOME": str(work / "home"), "FACERESTORE_OFFLINE": "1"}
        make_photos(work / "in", opts.photos)
        run = ["run", str(work / "in"), "-r", "-o", str(work / "out"), "--preset", str(preset), "--aligned",
               "--report", str(work / "report.jsonl"), "-q"]
        arrivals, samples, wall = timed_run([*run, "--print-outputs"], env)
        rows = per_thousand(arrivals, samples)
        result["run"] = {"wall_s": round(wall, 1), "photos_done": len(arrivals), "per_thousand": rows,
                         "peak_rss_mib": round(max(mib for _t, mib in samples), 1),
                         "state_kib": round(sum(p.stat().st_size for p in (work / "out").glob(".facerestore-state*")) / 1024),
                         "report_kib": round((work / "report.jsonl").stat().st_size / 1024)}
        print(json.dumps(result["run"], indent=1), flush=True)
        _a, _s, wall = timed_run([*run, "--dry-run"], env)
        result["rerun_dry_run_s"] = round(wall, 1)
        print(f"dry run of the finished folder ({opts.photos} skips): {wall:.1f} s", flush=True)

        from facerestore_cli.discover import discover

        many = work / "many"
        for i in range(opts.files):
            folder = many / f"d{i % 100:03}"
            if i < 100:
                folder.mkdir(parents=True)
            (folder / f"f{i:06}.png").write_bytes(b"x")
        started = time.monotonic()
        found = discover([many], work / "out-many", recursive=True)
        result["discovery_s"] = round(time.monotonic() - started, 2)
        assert len(found.jobs) == opts.files
        _a, _s, wall = timed_run(["run", str(many), "-r", "-o", str(work / "out-many"), "--preset", str(preset),
                                  "--aligned", "--dry-run"], env)
        result["dry_run_files_s"] = round(wall, 1)
        print(f"discovery of {opts.files} files: {result['discovery_s']} s; their dry run: {wall:.1f} s", flush=True)
    if opts.json:
        opts.json.parent.mkdir(parents=True, exist_ok=True)
        opts.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
