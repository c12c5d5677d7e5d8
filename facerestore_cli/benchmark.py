"""`facerestore bench`: the real pipeline timed on a set of photos, stage by stage, against the official scripts'
schedule in the same process on the same inputs.

Each pass first restores one photo into a scratch folder and detects once on a blank picture of every photo size
(warm-up: kernels chosen for each input shape, caches filled, compiled graphs built) and is then timed on every
photo, with outputs written for real into a temporary folder. The reference pass
(`--reference`) works the way the official scripts do: one photo at a time, its faces as one batch, fp32, detection
at full resolution, the whole picture converted to float for paste-back, no overlap, no compile.
Start-up is measured in a fresh process: from its start to the first face entering the network.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path

from facerestore_cli.photos import PhotoWriter
from facerestore_cli.pipeline import Schedule
from facerestore_cli.pixels import from_float, to_float

STARTUP_MARK = "facerestore-bench-first-face"  # what startup_probe.py prints when the first face enters the network


@dataclasses.dataclass
class PassResult:
    name: str
    photos: int
    faces: int
    failed: int
    wall_s: float
    stages_s: dict
    peak_rss_mb: float | None
    peak_cuda_mb: float | None

    @property
    def network_busy(self) -> float:
        return self.stages_s["network"] / self.wall_s if self.wall_s else 0.0

    def as_record(self) -> dict:
        return {"photos": self.photos, "faces": self.faces, "failed": self.failed, "wall_s": round(self.wall_s, 3),
                "photos_per_s": round(self.photos / self.wall_s, 4) if self.wall_s else None,
                "faces_per_s": round(self.faces / self.wall_s, 4) if self.wall_s else None,
                "network_busy": round(self.network_busy, 4), "stages_s": self.stages_s,
                "peak_rss_mb": self.peak_rss_mb, "peak_cuda_mb": self.peak_cuda_mb}


def measure(opts, jobs, scratch: Path, reference: bool, startup: bool, inputs_label: str) -> dict:
    """Benchmark opts on jobs (outputs under scratch); returns the JSON-ready result."""
    import torch

    from facerestore_cli.device import resolve
    from facerestore_cli.models import load_models, require_weights
    from facerestore_cli.options import io_workers
    from facerestore_cli.weights.store import WeightStore

    store = WeightStore(offline=opts.offline)
    require_weights(opts, store)
    compute = resolve(opts.device, opts.precision, opts.compile, opts.channels_last)
    models = load_models(opts, compute, store)
    result = {"inputs": inputs_label, "method": opts.preset.name, "device": compute.describe(),
              "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"), "batch_size": models.batch_size,
              "io_workers": io_workers(opts, compute), "detect_max_side": opts.detect_max_side, "compile": opts.compile,
              "warmup": "1 photo and a detection per photo size, each pass; excluded", "passes": {}}
    main = _timed_pass("pipeline", opts, jobs, scratch, models)
    result["passes"]["pipeline"] = main.as_record()
    if reference:
        ref_opts = dataclasses.replace(opts, detect_max_side=None, precision="fp32", compile=False,
                                       channels_last=False)
        ref_compute = resolve(opts.device, "fp32")
        ref_models = models if ref_compute == compute else load_models(ref_opts, ref_compute, store)
        if ref_models.detector is not None:
            ref_models = dataclasses.replace(ref_models, detector=_uncapped(ref_models.detector))
        ref = _timed_pass("reference", ref_opts, jobs, scratch, ref_models, REFERENCE)
        result["passes"]["reference"] = ref.as_record()
        result["speedup_photos_per_s"] = round(ref.wall_s / main.wall_s, 3) if main.wall_s else None
    if startup:
        result["startup_s"] = startup_seconds(opts, jobs[0].src, scratch / "startup")
    return result


def _uncapped(detector):
    from facerestore_cli.faces.detect import FaceDetector

    return FaceDetector(detector.model, threshold=detector.threshold, nms=detector.nms, max_side=None,
                        min_side=detector.min_side)


class WholeImageWriter(PhotoWriter):
    """The official scripts' paste-back: the whole picture converted to float and back (PhotoWriter converts only
    the faces' regions, with the same result)."""

    def paste(self, rgb, faces):
        return from_float(super().paste(to_float(rgb), faces), rgb.dtype)


# The official scripts' way with the pipeline's parts: one photo at a time (detected alone, no reader or writer
# threads), its faces as one unpadded batch, the whole picture converted to float to paste.
REFERENCE = Schedule(detect_batch=1, io_workers=0, photo_batches=True, writer=WholeImageWriter)


def _timed_pass(name: str, opts, jobs, scratch: Path, models, schedule: Schedule = Schedule()) -> PassResult:
    import torch

    from facerestore_cli.runner import run as run_pipeline
    from facerestore_cli.progress import Progress
    from facerestore_cli.timings import StageTimer

    def into(folder: Path, selected) -> tuple:
        moved = [dataclasses.replace(job, dest=folder / job.dest.relative_to(opts.output)) for job in selected]
        return dataclasses.replace(opts, output=folder, report=None), moved

    quiet = Progress(_stderr(), "quiet")
    warm_opts, warm_jobs = into(scratch / f"{name}-warmup", jobs[:1])
    run_pipeline(warm_opts, quiet, warm_jobs, timings=StageTimer(), models=models, schedule=schedule)
    if models.detector is not None and not opts.aligned:
        warm_detection(models.detector, jobs)
    cuda = models.compute.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(models.compute.device)
    reset_peak_rss()
    timed_opts, timed_jobs = into(scratch / name, jobs)
    timings = StageTimer()
    start = time.perf_counter()
    summary = run_pipeline(timed_opts, quiet, timed_jobs, timings=timings, models=models, schedule=schedule)
    if cuda:
        torch.cuda.synchronize()
    wall = time.perf_counter() - start
    peak_cuda = round(torch.cuda.max_memory_allocated(models.compute.device) / 2**20, 1) if cuda else None
    return PassResult(name, len(jobs), summary.faces, summary.failed, wall, timings.as_record(), peak_rss_mb(),
                      peak_cuda)


def warm_detection(detector, jobs) -> None:
    """Detect once on a blank picture of every photo size in the set: CPU convolution kernels are made for each
    input shape the first time it is seen, and a pass should not pay for the shapes another pass saw first."""
    import numpy as np
    from PIL import Image

    from facerestore_cli.picture import ORIENTATION_TAG

    sizes = set()
    for job in jobs:
        try:
            with Image.open(job.src) as image:
                width, height = image.size
                turned = image.getexif().get(ORIENTATION_TAG, 1) in (5, 6, 7, 8)  # read_image turns them
        except OSError:
            continue  # the pass reports it
        sizes.add((width, height) if turned else (height, width))
    for height, width in sorted(sizes):
        detector.detect(np.zeros((height, width, 3), np.uint8))


def reset_peak_rss() -> None:
    """Start the peak resident set size afresh (Linux: clear_refs 5 resets VmHWM); elsewhere the peak is the
    process's since it started."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_rss_mb() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def run_command_line(opts, photo: Path, output: Path) -> list[str]:
    """A `facerestore run` command line doing what opts do, on one photo: the options its command line gave."""
    return ["run", str(photo), "-o", str(output), "-q", *opts.command_line]


def startup_seconds(opts, photo: Path, output: Path) -> float:
    """Seconds from starting `facerestore run` in a fresh process to its first face entering the network."""
    code = "from facerestore_cli.startup_probe import main; main()"
    start = time.time()
    done = subprocess.run([sys.executable, "-c", code, *run_command_line(opts, photo, output)],
                          capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    for line in done.stderr.splitlines():
        if line.startswith(STARTUP_MARK):
            return round(float(line.split()[1]) - start, 3)
    raise RuntimeError(f"start-up run failed (exit {done.returncode}): {done.stderr.strip()[-500:]}")


def _stderr():
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def describe(result: dict) -> str:
    """The result as a text report of at most 80 columns."""
    from facerestore_cli.timings import STAGES

    lines = [f"facerestore bench: {result['method']} on {result['inputs']}",
             f"device: {result['device']}; torch {result['torch']}",
             f"batch {result['batch_size']}, io-workers {result['io_workers']}, detect-max-side "
             f"{result['detect_max_side']}, compile {'on' if result['compile'] else 'off'}",
             f"warm-up: {result['warmup']}", "",
             f"{'pass':<10} {'photos':>6} {'faces':>6} {'wall s':>8} {'photos/s':>9} {'faces/s':>8} {'net busy':>9}"]
    for name, p in result["passes"].items():
        lines.append(f"{name:<10} {p['photos']:>6} {p['faces']:>6} {p['wall_s']:>8.2f} {p['photos_per_s']:>9.3f} "
                     f"{p['faces_per_s']:>8.3f} {p['network_busy']:>8.0%}")
    if "speedup_photos_per_s" in result:
        lines.append(f"speed-up over the reference: {result['speedup_photos_per_s']:.2f}x photos/s")
    lines += ["", "seconds per stage, summed over threads:", f"{'':<10}" + "".join(f"{s:>8}" for s in STAGES)]
    for name, p in result["passes"].items():
        lines.append(f"{name:<10}" + "".join(f"{p['stages_s'][s]:>8.2f}" for s in STAGES))
    lines.append("")
    for name, p in result["passes"].items():
        memory = f"peak RSS {p['peak_rss_mb']:.0f} MB" if p["peak_rss_mb"] is not None else "peak RSS unknown"
        if p["peak_cuda_mb"] is not None:
            memory += f", peak CUDA {p['peak_cuda_mb']:.0f} MB"
        lines.append(f"{name}: {memory}" + (f", {p['failed']} failed" if p["failed"] else ""))
    if "startup_s" in result:
        lines.append(f"start-up to the first face (fresh process): {result['startup_s']:.2f} s")
    return "\n".join(lines)
