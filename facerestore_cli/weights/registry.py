"""The weights registry: `registry.yaml` parsed and validated into `WeightSpec`s, one per weight id."""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from facerestore_cli.errors import UsageError, WeightsError

DEFAULT_REGISTRY_PATH = Path(__file__).with_name("registry.yaml")

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_REQUIRED = ("file", "urls", "license", "source", "arch", "config", "format")
_OPTIONAL = ("size", "approx_size", "sha256", "sha256_reported", "obtain")
_FORMAT_KEYS = ("nested_key", "strip_prefix")


@dataclass(frozen=True)
class WeightSpec:
    """One weight file: where to get it, how to check it, and which network (with which config) it fits."""

    id: str
    file: str
    arch: str
    urls: tuple[str, ...] = ()
    size: int | None = None
    approx_size: float | None = None
    sha256: str | None = None
    sha256_reported: str | None = None
    license: str = ""
    source: str = ""
    obtain: str | None = None
    config: dict[str, Any] = field(default_factory=dict, hash=False)
    format: dict[str, str | None] = field(
        default_factory=lambda: {"nested_key": None, "strip_prefix": "module."}, hash=False
    )

    @property
    def nested_key(self) -> str | None:
        return self.format.get("nested_key")

    @property
    def strip_prefix(self) -> str | None:
        return self.format.get("strip_prefix")

    @property
    def downloadable(self) -> bool:
        return bool(self.urls)

    def fetch_command(self) -> str:
        return f"facerestore weights fetch {self.id}"

    def import_command(self, path: str = "PATH") -> str:
        return f"facerestore weights import {self.id} {path}"


def _entry_error(source: Path, weight_id: object, problem: str) -> WeightsError:
    return WeightsError(
        f"weights registry {source}: entry {weight_id!r}: {problem}",
        hint="fix the entry in the registry file (see the field list at its top)",
    )


def _check_sha(source: Path, weight_id: str, name: str, value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not _SHA256.match(value):
        raise _entry_error(source, weight_id, f"{name} must be 64 lowercase hex digits or null, got {value!r}")
    return value


def _spec_from_entry(source: Path, weight_id: object, entry: object) -> WeightSpec:
    if not isinstance(weight_id, str) or not weight_id:
        raise _entry_error(source, weight_id, "ids must be non-empty strings")
    if not isinstance(entry, Mapping):
        raise _entry_error(source, weight_id, f"must be a mapping of fields, got {type(entry).__name__}")
    missing = [k for k in _REQUIRED if k not in entry]
    if missing:
        raise _entry_error(source, weight_id, f"missing field(s): {', '.join(missing)}")
    unknown = sorted(set(entry) - set(_REQUIRED) - set(_OPTIONAL))
    if unknown:
        raise _entry_error(source, weight_id, f"unknown field(s): {', '.join(map(str, unknown))}")

    file = entry["file"]
    if not isinstance(file, str) or not file or "/" in file or "\\" in file or file.startswith("."):
        raise _entry_error(source, weight_id, f"file must be a plain file name, got {file!r}")

    urls = entry["urls"]
    if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
        raise _entry_error(source, weight_id, "urls must be a list of strings (may be empty)")
    for url in urls:
        if not url.startswith(("https://", "http://")):
            raise _entry_error(source, weight_id, f"url is not http(s): {url!r}")

    size = entry.get("size")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size <= 0):
        raise _entry_error(source, weight_id, f"size must be a positive integer (bytes) or null, got {size!r}")
    approx = entry.get("approx_size")
    if approx is not None and (isinstance(approx, bool) or not isinstance(approx, (int, float)) or approx <= 0):
        raise _entry_error(source, weight_id, f"approx_size must be a positive number (MiB) or null, got {approx!r}")

    for name in ("license", "source", "arch"):
        if not isinstance(entry[name], str) or not entry[name].strip():
            raise _entry_error(source, weight_id, f"{name} must be a non-empty string")
    obtain = entry.get("obtain")
    if obtain is not None and not isinstance(obtain, str):
        raise _entry_error(source, weight_id, "obtain must be a string")
    if not urls and not (obtain and obtain.strip()):
        raise _entry_error(source, weight_id, "an entry without urls needs 'obtain' text telling how to get the file")

    config = entry["config"]
    if not isinstance(config, Mapping) or not config:
        raise _entry_error(source, weight_id, "config must be a non-empty mapping of network hyper-parameters")
    fmt = entry["format"]
    if not isinstance(fmt, Mapping) or set(fmt) - set(_FORMAT_KEYS):
        raise _entry_error(source, weight_id, f"format must be a mapping with keys {', '.join(_FORMAT_KEYS)}")
    for key in _FORMAT_KEYS:
        if fmt.get(key) is not None and not isinstance(fmt[key], str):
            raise _entry_error(source, weight_id, f"format.{key} must be a string or null")

    return WeightSpec(
        id=weight_id,
        file=file,
        arch=entry["arch"],
        urls=tuple(urls),
        size=size,
        approx_size=float(approx) if approx is not None else None,
        sha256=_check_sha(source, weight_id, "sha256", entry.get("sha256")),
        sha256_reported=_check_sha(source, weight_id, "sha256_reported", entry.get("sha256_reported")),
        license=entry["license"],
        source=entry["source"],
        obtain=obtain,
        config=dict(config),
        format={key: fmt.get(key) for key in _FORMAT_KEYS},
    )


@functools.lru_cache(maxsize=8)
def _load_cached(path: Path) -> dict[str, WeightSpec]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise WeightsError(f"cannot read weights registry {path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise WeightsError(f"weights registry {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, Mapping):
        raise WeightsError(f"weights registry {path} must map weight ids to entries")

    specs = {weight_id: _spec_from_entry(path, weight_id, entry) for weight_id, entry in data.items()}
    by_file: dict[str, str] = {}
    for spec in specs.values():
        if spec.file in by_file:
            raise _entry_error(path, spec.id, f"file {spec.file!r} is already used by {by_file[spec.file]!r}")
        by_file[spec.file] = spec.id
    return specs


def load_registry(path: str | Path | None = None) -> dict[str, WeightSpec]:
    """Parse and validate a registry file (default: the packaged one); parsed once per path."""
    resolved = Path(path).expanduser().resolve() if path is not None else DEFAULT_REGISTRY_PATH
    return dict(_load_cached(resolved))


def get_spec(weight_id: str, registry: Mapping[str, WeightSpec] | None = None) -> WeightSpec:
    specs = load_registry() if registry is None else registry
    try:
        return specs[weight_id]
    except KeyError:
        raise UsageError(f"unknown weight id {weight_id!r}; known ids: {', '.join(sorted(specs))}",
                         hint="`facerestore weights list` shows every id") from None
