"""Device, precision and batch-size choices."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from facerestore_cli.errors import DeviceError, UsageError

PRECISIONS = ("auto", "fp32", "fp16", "bf16")


@dataclass(frozen=True)
class Compute:
    """Where and how networks run. Precision policy: fp32 is the reference; bf16/fp16 run the networks under
    torch.autocast with GroupNorm and the UNet's output block in fp32 (as the official `--use_fp16`), and the
    sampler arithmetic in fp32/fp64. compile: the restoration networks go through torch.compile on their fixed
    (padded) batch shape, with CUDA graphs on a GPU. channels_last: convolution weights in NHWC on CUDA."""

    device: torch.device
    precision: str  # fp32 | fp16 | bf16
    compile: bool = False
    channels_last: bool = False
    workers: tuple[str, ...] = ()  # --device a,b / all: the devices, one worker process each (workers.py)

    @property
    def dtype(self):

        return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[self.precision]

    def autocast(self):
        """Mixed precision for network forwards; GroupNorm and the sampler arithmetic stay fp32."""

        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def describe(self) -> str:

        if self.workers:
            return f"{len(self.workers)} workers ({', '.join(self.workers)}; {self.precision})"
        if self.device.type == "cuda":
            return f"{torch.cuda.get_device_name(self.device)} ({self.device}, {self.precision})"
        return f"cpu ({torch.get_num_threads()} threads, {self.precision})"


def resolve(device: str = "auto", precision: str = "auto", compile: bool = False, channels_last: bool = False) -> Compute:

    if precision not in PRECISIONS:
        raise UsageError(f"unknown precision '{precision}'", hint=f"choose one of {', '.join(PRECISIONS)}")
    if device == "auto":
        dev = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    else:
        try:
            dev = torch.device(device)
        except RuntimeError:
            raise UsageError(f"unknown device '{device}'", hint="use auto, cpu, cuda or cuda:N") from None
        if dev.type not in ("cpu", "cuda"):
            raise UsageError(f"unsupported device '{device}'", hint="use auto, cpu, cuda or cuda:N")
        if dev.type == "cuda":
            if not torch.cuda.is_available():
                raise DeviceError(f"device '{device}' requested but CUDA is not available",
                                  hint="run `facerestore doctor`, or use --device cpu")
            index = dev.index or 0
            if index >= torch.cuda.device_count():
                raise DeviceError(f"device '{device}' requested but only {torch.cuda.device_count()} CUDA device(s) exist",
                                  hint="run `facerestore doctor`")
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    if precision == "auto":
        if dev.type == "cuda":
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            precision = "fp32"
    if precision == "fp16" and dev.type == "cpu":
        raise UsageError("fp16 is not supported on the CPU", hint="use --precision bf16 or fp32 on the CPU")
    if channels_last and dev.type != "cuda":
        raise UsageError("--channels-last applies to CUDA devices only")
    if dev.type == "cuda" and precision == "fp32":
        # cuDNN's default TF32 convolutions round to 10 bits and made a face's result depend on its batch neighbours
        # (H200, benchmarks/results/gpu-2026-12-04/cuda-invariance.jsonl); fp32 means fp32
        torch.backends.cudnn.allow_tf32 = False
    return Compute(dev, precision, compile, channels_last)


MAX_BATCH = 8  # a padded last batch never costs much
MEMORY_SHARE = 0.8  # of the free memory, for the batches; the rest for the allocator's fragmentation and the workers


class _ProbeDone(Exception):
    """Raised from the sampler's callback: one step has shown the peak of a whole restoration."""


def batch_size_for(free_bytes: int, base_bytes: int, per_face_bytes: int) -> int:
    """Faces per batch that fit in MEMORY_SHARE of free memory, given what a batch takes beyond the loaded networks:
    base + per_face × faces; between 1 and MAX_BATCH."""
    if per_face_bytes <= 0:
        return MAX_BATCH
    return max(1, min(MAX_BATCH, int((free_bytes * MEMORY_SHARE - base_bytes) // per_face_bytes)))


def measure_batch_size(compute: Compute, restorer, face_size: int) -> int:
    from facerestore_cli.diffusion.noise import seeded_generator

    """Faces per forward. CPU: 1 — measured: even the test suite's tiny restorer (128-px faces) takes as long per
    face at batch 2, 4 or 8 as at 1 (benchmarks/large_scans.py, cpu-batch.json), and short batches are padded.
    CUDA: measured — one sampler step of a 1-face and of a 2-face batch give the peak memory a batch takes beyond
    the loaded networks, base + per_face × faces (the step's peak is the restoration's: every step is alike); then
    what fits."""
    if compute.device.type != "cuda":
        return 1
    peaks = []
    for faces in (1, 2):
        torch.cuda.synchronize(compute.device)
        empty_cache(compute)
        torch.cuda.reset_peak_memory_stats(compute.device)
        resident = torch.cuda.memory_allocated(compute.device)
        batch = torch.rand(faces, 3, face_size, face_size, device=compute.device)
        generators = [seeded_generator(k) for k in range(faces)]
        try:
            restorer.restore(batch, generators, callback=_stop_probe)
        except _ProbeDone:
            pass
        peaks.append(torch.cuda.max_memory_allocated(compute.device) - resident)
    per_face = peaks[1] - peaks[0]
    empty_cache(compute)
    free, _total = torch.cuda.mem_get_info(compute.device)
    return batch_size_for(free, peaks[0] - per_face, per_face)


def _stop_probe(_event: dict) -> None:
    raise _ProbeDone


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA's OutOfMemoryError, or an allocator failure reported as a plain RuntimeError."""

    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc).lower()
    return "out of memory" in text or "can't allocate memory" in text


def empty_cache(compute: Compute) -> None:

    if compute.device.type == "cuda":
        torch.cuda.empty_cache()
