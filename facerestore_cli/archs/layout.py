"""State-dict layouts: unwrap checkpoint objects, and compare key/shape layouts without loading weights."""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from facerestore_cli.archs import build_arch
from facerestore_cli.errors import WeightsError

Layout = dict[str, tuple[int, ...]]

# Keys under which training code commonly nests the state dict, tried in this order.
WRAPPER_KEYS = ("state_dict", "params_ema", "params", "model_state_dict", "model", "net", "ema")
DATA_PARALLEL_PREFIX = "module."


def normalize_state_dict(
    obj: object, nested_key: str | None = None, strip_prefix: str | None = None
) -> dict[str, torch.Tensor]:
    """Return a flat ``{key: tensor}`` from a loaded checkpoint object.

    ``nested_key`` names the wrapper entry to take (``{"state_dict": {...}}``); without it a wrapper is
    unwrapped only when the object clearly is one (some values are not tensors and one of
    ``WRAPPER_KEYS`` holds a mapping). A leading ``module.`` (DataParallel) is stripped from every key,
    then ``strip_prefix`` if given, from the keys that carry it.
    """
    if not isinstance(obj, Mapping):
        raise WeightsError(f"checkpoint holds a {type(obj).__name__}, not a state dict")
    if nested_key is not None:
        if nested_key not in obj:
            raise WeightsError(f"checkpoint has no {nested_key!r} entry (top-level keys: {_preview(obj)})")
        obj = obj[nested_key]
    elif not all(isinstance(v, torch.Tensor) for v in obj.values()):
        wrapper = next((k for k in WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if wrapper is not None:
            obj = obj[wrapper]
    if not isinstance(obj, Mapping):
        raise WeightsError(f"checkpoint entry {nested_key!r} holds a {type(obj).__name__}, not a state dict")
    not_tensors = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise WeightsError(
            f"checkpoint is not a flat state dict: {len(not_tensors)} non-tensor entries (e.g. {not_tensors[0]})"
        )

    state_dict = {}
    for key, tensor in obj.items():
        key = key.removeprefix(DATA_PARALLEL_PREFIX)
        if strip_prefix:
            key = key.removeprefix(strip_prefix)
        state_dict[key] = tensor
    return state_dict


def layout_of(module_or_state_dict: nn.Module | Mapping[str, torch.Tensor]) -> Layout:
    """``{key: shape}`` of a module's state dict (works on ``meta`` modules) or of a state dict."""
    if isinstance(module_or_state_dict, nn.Module):
        module_or_state_dict = module_or_state_dict.state_dict()
    return {key: tuple(tensor.shape) for key, tensor in module_or_state_dict.items()}


def load_manifest(json_path: str | Path) -> dict:
    """A checkpoint manifest: ``{model, note, n_tensors, n_params, tensors: [[key, shape, dtype], ...]}``."""
    return json.loads(Path(json_path).read_text())


def expected_layout(arch_name: str, config: dict) -> Layout:
    """Layout of network ``arch_name`` built on the ``meta`` device: no memory, no init cost. Networks that move
    themselves to a device while being built (facexlib's RetinaFace) are built on the CPU instead. Cached per
    architecture and config (callers only read it)."""
    return _expected_layout(arch_name, json.dumps(config, sort_keys=True))


@functools.lru_cache(maxsize=32)
def _expected_layout(arch_name: str, config_json: str) -> Layout:
    config = json.loads(config_json)
    try:
        with torch.device("meta"):
            model = build_arch(arch_name, config)
    except (NotImplementedError, RuntimeError):
        model = build_arch(arch_name, config)
    return layout_of(model)


@dataclass
class LayoutDiff:
    missing: list[str] = field(default_factory=list)  # expected but absent
    unexpected: list[str] = field(default_factory=list)  # present but not expected
    # (key, expected shape, actual shape)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    @property
    def size(self) -> int:
        """How far apart the layouts are: keys missing, unexpected or of another shape."""
        return len(self.missing) + len(self.unexpected) + len(self.mismatched)

    def summary(self, max_items: int = 5) -> str:
        """One line, e.g. ``3 missing keys (e.g. out.2.weight), 1 shape mismatch: k expected (1,2) got (2,1)``."""
        if self.ok:
            return "layouts match"
        parts = []
        if self.missing:
            parts.append(f"{_count(len(self.missing), 'missing key')} (e.g. {', '.join(self.missing[:max_items])})")
        if self.unexpected:
            examples = ", ".join(self.unexpected[:max_items])
            parts.append(f"{_count(len(self.unexpected), 'unexpected key')} (e.g. {examples})")
        if self.mismatched:
            shown = [f"{k} expected {_shape(e)} got {_shape(a)}" for k, e, a in self.mismatched[:max_items]]
            more = ", ..." if len(self.mismatched) > max_items else ""
            count = _count(len(self.mismatched), "shape mismatch", "shape mismatches")
            parts.append(f"{count}: {', '.join(shown)}{more}")
        return ", ".join(parts)


def compare_layouts(expected: Mapping[str, tuple[int, ...]], actual: Mapping[str, tuple[int, ...]]) -> LayoutDiff:
    return LayoutDiff(
        missing=[k for k in expected if k not in actual],
        unexpected=[k for k in actual if k not in expected],
        mismatched=[
            (k, tuple(shape), tuple(actual[k]))
            for k, shape in expected.items()
            if k in actual and tuple(actual[k]) != tuple(shape)
        ],
    )


def _count(n: int, singular: str, plural: str | None = None) -> str:
    return f"{n} {singular if n == 1 else (plural or singular + 's')}"


def _shape(shape: tuple[int, ...]) -> str:
    return "(" + ",".join(str(d) for d in shape) + ")"


def _preview(obj: Mapping, n: int = 5) -> str:
    keys = [str(k) for k in list(obj)[:n]]
    return ", ".join(keys) + (", ..." if len(obj) > n else "")
