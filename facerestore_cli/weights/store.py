"""The local weights cache: where files live, whether they are intact, and how they get there (fetch/import).

Layout: `<home>/weights/<file>` per registry entry, `<file>.part` while downloading, `hashes.json` recording
`{file: {sha256, size, mtime_ns}}` so that later loads only re-hash a file that changed on disk, and
`<file>.config.json` beside a file whose network is configured otherwise than its registry entry (what `train export`
or `weights import --preset` made it with): every loader and check builds the network with that configuration.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from facerestore_cli.errors import UsageError, WeightsError
from facerestore_cli.files import atomic_open, atomic_symlink, sha256_file
from facerestore_cli.weights.checkpoint_files import load_checkpoint, normalized, read_state_dict
from facerestore_cli.weights.download import ProgressCallback, download, part_path
from facerestore_cli.weights.registry import WeightSpec, get_spec, load_registry
from facerestore_cli.wording import counted

HASHES_FILE = "hashes.json"
CONFIG_SUFFIX = ".config.json"
_TRUTHY = {"1", "true", "yes"}


def home() -> Path:
    """`$FACERESTORE_HOME`, else `$XDG_CACHE_HOME/facerestore`, else `~/.cache/facerestore`."""
    explicit = os.environ.get("FACERESTORE_HOME", "").strip()
    if explicit:
        return Path(explicit).expanduser().resolve()
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    if xdg and Path(xdg).is_absolute():  # the XDG spec says relative paths are invalid and must be ignored
        return Path(xdg) / "facerestore"
    return Path.home() / ".cache" / "facerestore"


def offline_from_environment() -> bool:
    """FACERESTORE_OFFLINE=1 (or true/yes/on): never touch the network."""
    return os.environ.get("FACERESTORE_OFFLINE", "").strip().lower() in _TRUTHY


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    sha256: str | None
    reason: str


class WeightStore:
    """Weight files of one cache root, looked up by registry id."""

    def __init__(
        self,
        root: Path | None = None,
        offline: bool | None = None,
        registry: Mapping[str, WeightSpec] | None = None,
    ):
        self.root = Path(root) if root is not None else home()
        self.weights_dir = self.root / "weights"
        self.offline = offline_from_environment() if offline is None else bool(offline)
        self._registry = dict(registry) if registry is not None else None

    @property
    def registry(self) -> dict[str, WeightSpec]:
        if self._registry is None:
            self._registry = load_registry()
        return self._registry

    def spec(self, weight_id: str) -> WeightSpec:
        return get_spec(weight_id, self.registry)

    def path(self, weight_id: str) -> Path:
        return self.weights_dir / self.spec(weight_id).file

    def is_present(self, weight_id: str) -> bool:
        return self.path(weight_id).is_file()

    def status(self, weight_id: str) -> str:
        """One of "present", "partial" (an interrupted download left a `.part` file) or "missing"."""
        path = self.path(weight_id)
        if path.is_file():
            return "present"
        return "partial" if part_path(path).is_file() else "missing"

    # -- the configuration a file was made with ------------------------------------------------------------------

    def config_path(self, weight_id: str) -> Path:
        return self.weights_dir / (self.spec(weight_id).file + CONFIG_SUFFIX)

    def recorded_config(self, weight_id: str) -> dict:
        """The keys of the file's network config that differ from its registry entry's, as recorded beside it ({}
        for a file of the registry's network)."""
        path = self.config_path(weight_id)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise WeightsError(f"cannot read {path}: {exc}", hint=f"delete it and import {weight_id} again") from None
        if not isinstance(data, dict):
            raise WeightsError(f"{path} is not a mapping of network settings",
                               hint=f"delete it and import {weight_id} again")
        return data

    def config(self, weight_id: str, component_config: Mapping | None = None) -> dict:
        """The network config the file is built as: its registry entry's, updated by what was recorded beside the
        file, then by a preset component's `config:`."""
        return {**self.spec(weight_id).config, **self.recorded_config(weight_id), **(component_config or {})}

    def record_config(self, weight_id: str, config: Mapping | None) -> None:
        """Record beside the file the keys of `config` that differ from the registry's (none: remove the record)."""
        spec, path = self.spec(weight_id), self.config_path(weight_id)
        differs = {k: v for k, v in (config or {}).items() if spec.config.get(k) != v}
        if differs:
            with atomic_open(path, "w") as handle:
                json.dump(differs, handle, indent=2, sort_keys=True)
        else:
            path.unlink(missing_ok=True)

    def layout_problem(self, weight_id: str, component_config: Mapping | None = None) -> str | None:
        """None when the file present fits the network it is built as (`config`), else what differs; the keys and
        shapes are read without loading the tensors."""
        spec, path = self.spec(weight_id), self.path(weight_id)
        try:
            found = _layout().layout_of(normalized(load_checkpoint(path, "weight file", mmap=True), spec,
                                                    "weight file", path))
            expected = _layout().expected_layout(spec.arch, self.config(weight_id, component_config))
        except (WeightsError, UsageError) as exc:
            return exc.message
        diff = _layout().compare_layouts(expected, found)
        return None if diff.ok else f"does not fit its network ({spec.arch}): {diff.summary()}"

    # -- recorded hashes --------------------------------------------------------------------------------

    def _records(self) -> dict[str, dict]:
        try:
            data = json.loads((self.weights_dir / HASHES_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _record(self, path: Path, sha256: str, best_effort: bool = False) -> None:
        """Write {sha256, size, mtime_ns} of `path` into hashes.json; `best_effort` tolerates a read-only cache."""
        try:
            self._write_record(path, sha256)
        except OSError:
            if not best_effort:
                raise

    def _write_record(self, path: Path, sha256: str) -> None:
        stat = path.stat()
        records = self._records()
        records[path.name] = {"sha256": sha256, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
        with atomic_open(self.weights_dir / HASHES_FILE, "w") as fh:
            json.dump(records, fh, indent=1, sort_keys=True)

    def recorded_sha256(self, weight_id: str) -> str | None:
        record = self._records().get(self.spec(weight_id).file)
        return record.get("sha256") if isinstance(record, dict) else None

    # -- checks -----------------------------------------------------------------------------------------

    def _repair_command(self, spec: WeightSpec) -> str:
        return spec.fetch_command() if spec.downloadable else spec.import_command()

    def verify(self, weight_id: str) -> VerifyResult:
        """Hash the whole file and compare it with the registry's sha256, else with the recorded one; then check
        that its keys and shapes fit the network it is built as (the registry's, or the configuration recorded
        beside it)."""
        result = self._verify_hash(weight_id)
        problem = self.layout_problem(weight_id) if result.ok else None
        if problem:
            return VerifyResult(False, result.sha256, problem)
        return result

    def _verify_hash(self, weight_id: str) -> VerifyResult:
        spec, path = self.spec(weight_id), self.path(weight_id)
        if not path.is_file():
            return VerifyResult(False, None, f"missing: {path}")
        size = path.stat().st_size
        if spec.size is not None and size != spec.size:
            return VerifyResult(False, None, f"corrupt: expected {spec.size} bytes, file has {size}")
        sha = sha256_file(path).hexdigest()
        recorded = self.recorded_sha256(weight_id)
        if spec.sha256 is not None:
            if sha != spec.sha256:
                return VerifyResult(False, sha, f"corrupt: expected sha256 {spec.sha256}, file has {sha}")
            self._record(path, sha, best_effort=True)
            return VerifyResult(True, sha, "verified against the registry sha256")
        if recorded is not None:
            if sha != recorded:
                reason = f"changed since it was recorded: expected sha256 {recorded}, file has {sha}"
                return VerifyResult(False, sha, reason)
            return VerifyResult(True, sha, "matches the sha256 recorded when it was fetched or imported")
        self._record(path, sha, best_effort=True)
        note = ""
        if spec.sha256_reported is not None:
            agrees = "matches" if sha == spec.sha256_reported else "differs from"
            note = f"; {agrees} the third-party-reported sha256 {spec.sha256_reported}"
        return VerifyResult(True, sha, f"unverified: no published sha256, recorded this one for later checks{note}")

    def _checked_sha256(self, spec: WeightSpec, path: Path) -> tuple[str, bool]:
        """(sha256, whether it was re-hashed): trusted from hashes.json while size and mtime are unchanged,
        else re-hashed; either way compared with the registry's hash, else the recorded one."""
        stat = path.stat()
        record = self._records().get(spec.file)
        record = record if isinstance(record, dict) else None
        if record and record.get("size") == stat.st_size and record.get("mtime_ns") == stat.st_mtime_ns:
            sha, rehashed = record.get("sha256"), False
        else:
            sha, rehashed = sha256_file(path).hexdigest(), True
        expected = spec.sha256 or (record or {}).get("sha256")
        if expected is not None and sha != expected:
            raise WeightsError(
                f"{path} is corrupt: expected sha256 {expected}, file has {sha}; "
                f"delete it and run {self._repair_command(spec)}",
                hint=f"rm '{path}' && {self._repair_command(spec)}",
            )
        return sha, rehashed

    # -- loading ----------------------------------------------------------------------------------------

    def load_state_dict(self, weight_id: str, config_override: Mapping | None = None, expected=None) -> dict:
        """Check the file, load it on the CPU with `weights_only=True`, return a flat `{key: tensor}`.

        The keys and shapes are also checked against `expected` (the layout of the module the caller built), or
        with `config_override` (even `{}`) against `spec.arch` built with the registry config updated by it.
        """
        spec, path = self.spec(weight_id), self.path(weight_id)
        self.require([weight_id])
        sha, rehashed = self._checked_sha256(spec, path)
        state_dict = read_state_dict(path, f"weight file of {weight_id}:", spec)
        if rehashed:
            self._record(path, sha, best_effort=True)
        if expected is None and config_override is not None:
            expected = _layout().expected_layout(spec.arch, self.config(weight_id, config_override))
        if expected is not None:
            self._check_layout(spec, state_dict, expected, str(path))
        return state_dict

    def _check_layout(self, spec: WeightSpec, state_dict: Mapping, expected, what: str) -> None:
        diff = _layout().compare_layouts(expected, _layout().layout_of(state_dict))
        if not diff.ok:
            raise WeightsError(
                f"{what} does not fit {spec.id} (network {spec.arch}): {diff.summary()}",
                hint=f"{spec.id} expects {spec.file} from {spec.source}",
            )

    # -- getting files ----------------------------------------------------------------------------------

    def fetch(self, weight_id: str, progress: ProgressCallback | None = None) -> Path:
        """Download the file unless it is already present; tries each URL of the entry in order."""
        spec, path = self.spec(weight_id), self.path(weight_id)
        if path.is_file():
            return path
        if not spec.urls:
            raise WeightsError(
                f"{weight_id} ({spec.file}) cannot be downloaded automatically. {spec.obtain}",
                hint=f"then run: {spec.import_command(f'/path/to/{spec.file}')}",
            )
        if self.offline:
            raise WeightsError(
                f"offline (FACERESTORE_OFFLINE is set): cannot download {weight_id} ({spec.file}) from {spec.urls[0]}",
                hint=f"download it elsewhere and run {spec.import_command(f'/path/to/{spec.file}')}, "
                f"or unset FACERESTORE_OFFLINE",
            )
        self.weights_dir.mkdir(parents=True, exist_ok=True)
        failures = []
        for url in spec.urls:
            try:
                sha = download(url, path, spec.size, spec.sha256, progress=progress)
            except WeightsError as exc:
                failures.append(exc.message)
                continue
            self._record(path, sha)
            self.record_config(weight_id, None)
            return path
        raise WeightsError(
            f"could not download {weight_id} ({spec.file}): " + "; ".join(failures),
            hint=f"run {spec.fetch_command()} again to resume, or download {spec.urls[0]} by hand and run "
            f"{spec.import_command(f'/path/to/{spec.file}')}",
        )

    def identify(self, src: Path, configs: Mapping[str, Mapping] | None = None):
        """Which weight ids a checkpoint fits by its keys and shapes: (ids it fits, (nearest id, its difference)
        when it fits none). configs: per id, an update of the registry config (a preset's component config)."""
        layout = _layout()
        obj = load_checkpoint(Path(src), "checkpoint")
        fits, nearest = [], None
        for wid, spec in self.registry.items():
            try:
                found = layout.layout_of(normalized(obj, spec, "checkpoint", Path(src)))
            except WeightsError:
                continue  # not nested the way this entry's files are
            diff = layout.compare_layouts(layout.expected_layout(spec.arch, {**spec.config, **(configs or {}).get(wid, {})}),
                                          found)
            if diff.ok:
                fits.append(wid)
            elif nearest is None or diff.size < nearest[1].size:
                nearest = (wid, diff)
        return fits, (None if fits else nearest)

    def import_file(self, weight_id: str, src: Path, config: Mapping | None = None, link: bool = False) -> Path:
        """Check a user-supplied checkpoint against the entry's network layout (its registry config updated by
        `config`, as a preset's component may configure it), then copy it into the cache (or link to it)."""
        spec, dest = self.spec(weight_id), self.path(weight_id)
        src = Path(src).expanduser()
        if not src.is_file():
            raise WeightsError(f"cannot import {weight_id}: {src} is not a file")
        state_dict = read_state_dict(src, "checkpoint", spec)
        self._check_layout(spec, state_dict, _layout().expected_layout(spec.arch, {**spec.config, **(config or {})}),
                           str(src))

        self.weights_dir.mkdir(parents=True, exist_ok=True)
        if src.resolve() == dest.resolve():
            sha = sha256_file(dest).hexdigest()
        elif link:
            sha = sha256_file(src).hexdigest()
            self._check_pinned(spec, src, sha)
            atomic_symlink(src.resolve(), dest)
        else:
            sha = self._copy_atomically(src, dest, spec)
        part_path(dest).unlink(missing_ok=True)
        self._record(dest, sha)
        self.record_config(weight_id, config)
        return dest

    def _copy_atomically(self, src: Path, dest: Path, spec: WeightSpec) -> str:
        hasher = hashlib.sha256()
        with open(src, "rb") as fin, atomic_open(dest, "wb") as fout:
            while chunk := fin.read(1 << 20):
                hasher.update(chunk)
                fout.write(chunk)
            sha = hasher.hexdigest()
            self._check_pinned(spec, src, sha)
        return sha

    @staticmethod
    def _check_pinned(spec: WeightSpec, src: Path, sha: str) -> None:
        if spec.sha256 is not None and sha != spec.sha256:
            raise WeightsError(
                f"{src} has the right layout but is not the official {spec.file}: "
                f"expected sha256 {spec.sha256}, file has {sha}",
                hint="the registry pins this file's hash; a different file needs its own registry entry",
            )

    def require(self, weight_ids: Iterable[str]) -> None:
        """Raise one WeightsError naming every missing file and how to get each of them."""
        missing = [self.spec(i) for i in dict.fromkeys(weight_ids) if not self.is_present(i)]
        if not missing:
            return
        lines = [f"{counted(len(missing), 'weight file')} missing from {self.weights_dir}:"]
        for spec in missing:
            size = f" (~{spec.approx_size:g} MiB)" if spec.approx_size else ""
            partial = ", partly downloaded" if self.status(spec.id) == "partial" else ""
            lines.append(f"  {spec.id}: {spec.file}{size}{partial}")
            if spec.urls:
                lines.append(f"    download: {' or '.join(spec.urls)}")
            else:
                lines.append(f"    obtain: {spec.obtain}")
        fetchable = [s.id for s in missing if s.urls]
        manual = [s for s in missing if not s.urls]
        commands = []
        if fetchable and not self.offline:
            commands.append(f"facerestore weights fetch {' '.join(fetchable)}")
        for spec in (missing if self.offline else manual):
            commands.append(spec.import_command(f"/path/to/{spec.file}"))
        if self.offline and fetchable:
            lines.append("  (offline: FACERESTORE_OFFLINE is set, so nothing is downloaded)")
        raise WeightsError("\n".join(lines), hint="run: " + " ; ".join(commands))


def _layout():
    return importlib.import_module("facerestore_cli.archs.layout")
