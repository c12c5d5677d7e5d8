"""The settings of one `run` (or `bench`), checked and resolved by cli_run.py: what every part of a run reads, low in
the import graph (it imports nothing above it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from facerestore_cli.faces.frontend import FaceSettings
from facerestore_cli.methods import Method
from facerestore_cli.methods.params import MethodParams
from facerestore_cli.presets import Preset

DETECT_MAX_SIDE = 2048  # detection runs on a copy of larger photos shrunk to this long side
IO_WORKERS = 2  # reader and writer threads beside a GPU's network loop


@dataclass
class RunOptions:
    output: Path
    preset: Preset
    method: Method
    params: MethodParams
    batch_size: int | None = None
    device: str = "auto"
    precision: str = "auto"
    detector: str = "retinaface_resnet50"
    aligned: bool = False
    save_faces: bool = False
    save_compare: bool = False
    report: Path | None = None
    faces: FaceSettings = field(default_factory=FaceSettings)
    offline: bool = False
    force: bool = False
    redo_failed: bool = False
    wait_lock: float | None = None
    fail_fast: bool = False
    max_failures: int | None = None
    dry_run: bool = False
    fmt: str | None = None
    quality: int | None = None
    metadata: str = "keep"
    provenance: bool = False
    max_pixels: int | None = None
    identity_score: bool = False
    detect_max_side: int | None = DETECT_MAX_SIDE
    io_workers: int | None = None  # None: IO_WORKERS on a GPU, 0 on a CPU
    compile: bool = False
    channels_last: bool = False
    reference: bool = False  # the official scripts' schedule (benchmark only): see Pipeline
    shard: tuple[int, int] | None = None  # --shard I/N: this process's part of the inputs (shards.py)
    engine: str = "local"  # local | ray (ray_engine.py)
    ray_address: str | None = None


def io_workers(opts: RunOptions, compute) -> int:
    """--io-workers, or by default IO_WORKERS on a GPU and 0 on a CPU (where the network keeps every core busy and
    threads beside it only compete for them)."""
    if opts.io_workers is not None:
        return opts.io_workers
    return IO_WORKERS if compute.device.type == "cuda" else 0
