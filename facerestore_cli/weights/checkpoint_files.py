"""Reading a weight file or a user's checkpoint: torch.load on the CPU with weights_only (memory-mapped when only keys
and shapes are wanted), every failure a WeightsError naming the file, and the result flattened to a state dict as
its registry entry says (nested key, prefix)."""

from __future__ import annotations

import re
from pathlib import Path

from facerestore_cli.errors import WeightsError
from facerestore_cli.weights.registry import WeightSpec


def read_state_dict(path: Path, what: str, spec: WeightSpec) -> dict:
    """torch.load (CPU, weights_only) and normalise to a flat state dict; any failure names the file."""
    return normalized(load_checkpoint(path, what), spec, what, path)


def load_checkpoint(path: Path, what: str, mmap: bool = False):
    """torch.load on the CPU with weights_only (torch is imported here: the CLI imports this module at start);
    mmap: map the tensors instead of reading them (keys and shapes at little cost; files of torch's zip format)."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap and _zip_format(path))
    except Exception as exc:  # torch raises RuntimeError, EOFError, UnpicklingError, ... for bad files
        text = str(exc)
        unpickler = re.search(r"WeightsUnpickler error:\s*(.+)", text)
        detail = (unpickler.group(1) if unpickler else text.split("\n")[0] or type(exc).__name__)[:160]
        if "Unsupported global" in text:
            problem = f"holds Python objects other than tensors; refusing to unpickle it ({detail})"
        else:
            problem = f"is corrupt or truncated (torch.load: {detail})"
        raise WeightsError(f"{what} {path} {problem}") from exc


def _zip_format(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(4) == b"PK\x03\x04"


def normalized(obj, spec: WeightSpec, what: str, path: Path) -> dict:
    from facerestore_cli.archs.layout import normalize_state_dict

    try:
        return normalize_state_dict(obj, spec.nested_key, spec.strip_prefix)
    except WeightsError as exc:
        raise WeightsError(f"{what} {path}: {exc.message}", hint=exc.hint) from exc
