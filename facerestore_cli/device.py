"""Device, precision and batch-size choices."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from facerestore_cli.errors import DeviceError, UsageError

PRECISIONS = ("auto", "fp32", "fp16", "bf16")


@dataclass(frozen=True)
class Compute:
    device: torch.device
    precision: str  # fp32 | fp16 | bf16

    @property
    def dtype(self):

        return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[self.precision]

    def autocast(self):
        """Mixed precision for network forwards; GroupNorm and the sampler arithmetic stay fp32."""

        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def describe(self) -> str:

        if self.device.type == "cuda":
            return f"{torch.cuda.get_device_name(self.device)} ({self.device}, {self.precision})"
        return f"cpu ({torch.get_num_threads()} threads, {self.precision})"


def resolve(device: str = "auto", precision: str = "auto") -> Compute:

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
    return Compute(dev, precision)


def default_batch_size(compute: Compute) -> int:
    """Faces per forward. CPU: 1 (batching buys nothing on a few cores, and short batches are padded).
    CUDA: what fits at about 2.5 GiB of activations per 512² face in half precision, at most 8, so a padded last
    batch never costs much."""

    if compute.device.type != "cuda":
        return 1
    free, _total = torch.cuda.mem_get_info(compute.device)
    per_face = 2.5 * 2**30 * (2 if compute.precision == "fp32" else 1)
    return max(1, min(8, int(free * 0.8 // per_face)))


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA's OutOfMemoryError, or an allocator failure reported as a plain RuntimeError."""

    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc).lower()
    return "out of memory" in text or "can't allocate memory" in text


def empty_cache(compute: Compute) -> None:

    if compute.device.type == "cuda":
        torch.cuda.empty_cache()
