"""The settings of one `run` (or `bench`): what every part of a run reads, low in the import graph (it imports
nothing above it). Each run flag is one `setting(...)` field of RunOptions (or of FaceSettings, for the face front
end): its flag, help and what it means for a run are declared there and nowhere else (settings.py)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from facerestore_cli.errors import UsageError
from facerestore_cli.faces import DEFAULT_DETECTOR, DETECTOR_WEIGHTS
from facerestore_cli.faces.settings import FaceSettings
from facerestore_cli.methods import Method, method_for
from facerestore_cli.methods.params import MethodParams
from facerestore_cli.presets import Preset
from facerestore_cli.settings import (ARCHIVAL, DEVICE, EXTRAS, FACES, IO, METHOD, OUTPUT, RESTORATION, Setting,
                                      setting, settings_of)
from facerestore_cli.shards import parse_shard
from facerestore_cli.weights.store import offline_from_environment

DETECT_MAX_SIDE = 0  # detection at full resolution, as the official helpers (they only ever scale up)
IO_WORKERS = 2  # reader and writer threads beside a GPU's network loop
FORMATS = {"png": "png", "jpg": "jpg", "jpeg": "jpg", "webp": "webp", "tiff": "tiff", "tif": "tiff"}


def detector_name(value: str) -> str:
    """A detector by name or by its weight id (`retinaface-mobile0.25`), as its name."""
    by_weights = {wid: name for name, wid in DETECTOR_WEIGHTS.items()}
    if value in DETECTOR_WEIGHTS or value in by_weights:
        return by_weights.get(value, value)
    raise UsageError(f"unknown detector '{value}'",
                     hint=f"choose one of: {', '.join(DETECTOR_WEIGHTS)} (or their weight ids)")


def format_name(fmt: str) -> str:
    if fmt.lower() not in FORMATS:
        raise UsageError(f"unsupported --format '{fmt}'", hint="choose png, jpg, webp or tiff")
    return FORMATS[fmt.lower()]


@dataclass
class RunOptions:
    preset: Preset
    method: Method
    params: MethodParams
    output: Path = setting("-o", "--output", panel=IO, metavar="DIR", run_only=True,
                           help="Output folder; mirrors the input tree.")
    identity_score: bool = setting("--identity-score", default=False, panel=METHOD, shapes=OUTPUT,
                                   help="Report each face's ArcFace identity cosine to the input and to the method's "
                                        "estimate (needs arcface-ir-se50).")
    samples: int = setting("--samples", default=1, panel=METHOD, metavar="K", min=1, shapes=RESTORATION,
                           help="Restore each face K times (sample k's noise seeded from seed, photo, face and k) "
                                "and keep the one --select prefers.")
    select: str = setting("--select", default="identity", panel=METHOD, metavar="identity|estimate",
                          choices=("identity", "estimate"), shapes=RESTORATION, record_as="keep_by",
                          help="Which of --samples K to keep: the highest ArcFace cosine to the input crop, or to "
                               "the method's own estimate.")
    min_identity: float | None = setting("--min-identity", default=None, panel=METHOD, metavar="T", min=-1.0, max=1.0,
                                         shapes=RESTORATION,
                                         help="Do not paste a kept face whose ArcFace cosine to its input is below "
                                              "T: --fallback decides what the photo gets instead.")
    fallback: str = setting("--fallback", default="original", panel=METHOD, metavar="original|estimate",
                            choices=("original", "estimate"), shapes=RESTORATION,
                            help="What a face below --min-identity becomes: the original (default) or the "
                                 "method's estimate.")
    detector: str = setting("--detector", default=DEFAULT_DETECTOR, panel=FACES, metavar="NAME", parse=detector_name,
                            shapes=RESTORATION, photo_only=True,
                            help="retinaface_resnet50 or retinaface_mobile0.25 (or their weight ids).")
    detect_max_side: int | None = setting("--detect-max-side", default=DETECT_MAX_SIDE, panel=FACES, metavar="PX",
                                          min=0, parse=lambda px: px or None, shapes=RESTORATION, photo_only=True,
                                          help="Detect faces on a copy of larger photos shrunk to this long side "
                                               "(faster; faces less than 10 px between the eyes on that copy may "
                                               "be missed). Default 0: full resolution, every face.")
    aligned: bool = setting("--aligned", default=False, panel=FACES, shapes=RESTORATION,
                            help="Inputs are already aligned face crops (no detection, no paste-back).")
    faces: FaceSettings = field(default_factory=FaceSettings)
    batch_size: int | None = setting("--batch-size", default=None, panel=DEVICE, metavar="N", min=1,
                                     help="Faces per forward (default: 1 on CPU; on a GPU what fits, from the memory "
                                          "one face was measured to take).")
    device: str = setting("--device", default="auto", panel=DEVICE, metavar="DEVICE",
                          help="auto, cpu, cuda or cuda:N; a list (cuda:0,cuda:1) or all: one worker process per "
                               "device, sharing the photos.")
    precision: str = setting("--precision", default="auto", panel=DEVICE, metavar="NAME", shapes=RESTORATION,
                             help="auto, fp32, fp16 or bf16 (auto: fp32 on CPU, bf16 or fp16 on GPU).")
    compile: bool = setting("--compile", default=False, panel=DEVICE, shapes=RESTORATION,
                            help="torch.compile the restoration networks (CUDA graphs on a GPU); the first batch "
                                 "takes longer.")
    channels_last: bool = setting("--channels-last", default=False, panel=DEVICE, shapes=RESTORATION,
                                  help="NHWC convolution weights (CUDA only).")
    engine: str = setting("--engine", default="local", panel=DEVICE, metavar="local|ray", choices=("local", "ray"),
                          whole_run=True,
                          help="ray: run as a Ray Data pipeline (CPU actors read and write, one restoring actor per "
                               "GPU) on --ray-address or a local Ray; needs facerestore[ray].")
    ray_address: str | None = setting("--ray-address", default=None, panel=DEVICE, metavar="ADDR", whole_run=True,
                                      help="An existing Ray cluster (e.g. ray://head:10001, auto); default: a local "
                                           "Ray.")
    io_workers: int | None = setting("--io-workers", default=None, panel=DEVICE, metavar="N", min=0, max=32,
                                     help="Threads that read photos ahead and write them behind the network (0: one "
                                          "thread does everything in turn; default 2 on a GPU, 0 on a CPU, where the "
                                          "network already keeps every core busy).")
    report: Path | None = setting("--report", default=None, panel=ARCHIVAL, metavar="FILE.jsonl", run_only=True,
                                  help="Write one JSON line per photo and a summary.")
    force: bool = setting("--force", default=False, panel=ARCHIVAL, run_only=True,
                          help="Redo every input, even those already done.")
    redo_failed: bool = setting("--redo-failed", default=False, panel=ARCHIVAL, run_only=True,
                                help="Redo inputs that failed last time (others done stay skipped).")
    shard: tuple[int, int] | None = setting("--shard", default=None, panel=ARCHIVAL, metavar="I/N", parse=parse_shard,
                                            whole_run=True, run_only=True,
                                            help="Do only shard I of N (0 to N-1) of the inputs, split by a hash of "
                                                 "their paths, beside the other shards in the same OUT (Slurm "
                                                 "arrays, Kubernetes Indexed Jobs); see `report merge`.")
    wait_lock: float | None = setting("--wait-lock", default=None, panel=ARCHIVAL, metavar="SECONDS", run_only=True,
                                      help="If another run holds OUT, wait this long instead of exiting 75.")
    fail_fast: bool = setting("--fail-fast", default=False, panel=ARCHIVAL, run_only=True,
                              help="Stop at the first failed file.")
    max_failures: int | None = setting("--max-failures", default=None, panel=ARCHIVAL, metavar="N", min=1,
                                       run_only=True, help="Stop after N failed files.")
    max_pixels: int | None = setting("--max-pixels", default=None, panel=ARCHIVAL, metavar="N", min=1,
                                     help="Refuse images above N pixels (default 178,956,970).")
    offline: bool = setting("--offline", default=False, panel=ARCHIVAL,
                            parse=lambda given: given or offline_from_environment(),
                            help="Never touch the network (also FACERESTORE_OFFLINE=1).")
    dry_run: bool = setting("--dry-run", default=False, panel=ARCHIVAL, run_only=True,
                            help="Check everything, then list each input, its output and why it would run or be "
                                 "skipped (stdout); loads no model.")
    fmt: str | None = setting("--format", default=None, panel=EXTRAS, metavar="png|jpg|webp|tiff", parse=format_name,
                              shapes=OUTPUT, record_as="format", help="Write this format instead of the input's.")
    quality: int | None = setting("--quality", default=None, panel=EXTRAS, metavar="N", min=1, max=100,
                                  shapes=OUTPUT, help="JPEG/WebP quality (default: a JPEG input's own, from its "
                                       "quantization tables; otherwise 95).")
    metadata: str = setting("--metadata", default="keep", panel=EXTRAS, metavar="keep|strip",
                            choices=("keep", "strip"), shapes=OUTPUT, help="Keep or strip EXIF/ICC/XMP/IPTC.")
    provenance: bool = setting("--provenance", default=False, panel=EXTRAS, shapes=OUTPUT,
                               help="Note tool, version, method and parameters in the output's EXIF Software.")
    save_faces: bool = setting("--save-faces", default=False, panel=EXTRAS,
                               help="Also write restored face crops under OUT/_faces/.")
    save_compare: bool = setting("--save-compare", default=False, panel=EXTRAS,
                                 help="Also write input | restored sheets per face under OUT/_compare/.")
    save_samples: bool = setting("--save-samples", default=False, panel=EXTRAS,
                                 help="Also write every one of --samples K under OUT/_samples/.")
    command_line: tuple[str, ...] = ()  # the options the command line gave, as words (bench's start-up probe)

    def __getstate__(self) -> dict:
        """What another process (a device worker, a Ray actor) unpickles: a preset file's method module and its
        Params class live in a module made at run time, so they travel as the preset and the parameters' values."""
        return {**self.__dict__, "method": None, "params": dataclasses.asdict(self.params)}

    def __setstate__(self, state: dict) -> None:
        method = method_for(state["preset"])
        self.__dict__.update({**state, "method": method, "params": method.Params(**state["params"])})

    def check(self) -> None:
        """Rules between options."""
        if self.engine == "ray" and "," in self.device:
            raise UsageError("--engine ray uses every GPU of the Ray cluster: give --device auto or cpu, not a list")
        if self.ray_address is not None and self.engine != "ray":
            raise UsageError("--ray-address needs --engine ray")
        uses_estimate = (self.samples > 1 and self.select == "estimate") or (
            self.min_identity is not None and self.fallback == "estimate")
        if uses_estimate and not self.method.gives_estimate:
            raise UsageError(f"method '{self.preset.method}' makes no estimate of its own: --select estimate and "
                             f"--fallback estimate need one", hint="use --select identity / --fallback original")
        if self.save_samples and self.samples == 1:
            raise UsageError("--save-samples writes the --samples K restorations of each face: give --samples K > 1")

    def shaping(self, kind: str) -> dict[str, Any]:
        """The options that shape the output (kind RESTORATION: its pixels; OUTPUT: the file), by the names the
        rerun signature and records spell them; photo-only ones are None with --aligned."""
        return {spec.record_as or spec.name: None if self.aligned and spec.photo_only else getattr(self, spec.name)
                for spec in RUN_SETTINGS if spec.shapes == kind}


RUN_SETTINGS: tuple[Setting, ...] = settings_of(RunOptions)


def io_workers(opts: RunOptions, compute) -> int:
    """--io-workers, or by default IO_WORKERS on a GPU and 0 on a CPU (where the network keeps every core busy and
    threads beside it only compete for them)."""
    if opts.io_workers is not None:
        return opts.io_workers
    return IO_WORKERS if compute.device.type == "cuda" else 0
