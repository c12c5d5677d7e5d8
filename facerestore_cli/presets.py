"""Method presets: YAML files declaring a method's components, weights and default parameters."""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from facerestore_cli.errors import UsageError
from facerestore_cli.faces.settings import FaceSettings

REQUIRED = ("name", "method", "components", "parameters")
# Paste-back mask network of every preset (facexlib ParseNet). Optional: without its file faces are pasted with
# facexlib's square mask. A preset may give it a `config` (tests use a tiny one) or another weight id.
PASTE_PARSER = "paste_parser"
DEFAULT_PASTE_PARSER = {"weights": "parsenet", "optional": True}
# Background upsamplers for --upscale 2 / 4 (Real-ESRGAN), needed only by runs that ask for them.
BACKGROUND = {2: "background_x2", 4: "background_x4"}
DEFAULT_BACKGROUND = {2: {"weights": "realesrgan-x2plus", "optional": True},
                      4: {"weights": "realesrgan-x4plus", "optional": True}}


@dataclass(frozen=True)
class NoiseSchedule:
    """The noise schedule a diffusion network was trained with (linear β, Ho et al. 2020 §4) and, where a method
    samples a respaced chain of it (DR2), how many timesteps that chain has."""

    kind: str = "linear"
    num_timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    respace: int | None = None


@dataclass(frozen=True)
class Component:
    """One network of a preset: its weight id, whether a run may go without it, a config over its registry entry's,
    the weight ids a knob chooses between, and (a diffusion network) its schedule. Whether it takes a condition is
    its architecture's to say (archs/)."""

    weights: str
    optional: bool = False
    config: dict[str, Any] | None = None
    choices: dict[str, str] | None = None
    schedule: NoiseSchedule | None = None

    def weight_ids(self) -> set[str]:
        return {self.weights, *(self.choices or {}).values()}

    def network_key(self, weight_id: str | None = None) -> tuple[str, str]:
        """What identifies the network it builds from `weight_id` (default its own): the id and its config over the
        registry entry's (caches of loaded networks and of layout checks key by it)."""
        return weight_id or self.weights, json.dumps(dict(self.config or {}), sort_keys=True)


@dataclass(frozen=True)
class Preset:
    name: str
    method: str
    title: str
    components: dict[str, Component]
    parameters: dict[str, Any]
    face_size: int = 512
    faces: FaceSettings = field(default_factory=FaceSettings)  # the face front end (faces/settings.py)
    source: str = ""  # what messages call it: the built-in file's name, or the path given
    path: Path | None = None  # the file, for presets given with --preset (a method module may sit beside it)
    provenance: dict[str, str] = field(default_factory=dict)  # role → where its weights come from

    def schedule(self, role: str) -> NoiseSchedule:
        """The noise schedule of the diffusion component `role` (a usage error when it gives none)."""
        component = self.components.get(role)
        if component is None or component.schedule is None:
            raise UsageError(f"preset {self.source}: component '{role}' needs a `schedule:` (it is a diffusion "
                             f"network)")
        return component.schedule


def _typed(cls, data: Any, where: str):
    """data (a mapping) as the dataclass cls, each value checked against its field's type."""
    if not isinstance(data, dict):
        raise UsageError(f"{where} must be a mapping")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise UsageError(f"{where}: unknown key(s) {', '.join(unknown)}", hint=f"known: {', '.join(fields)}")
    hints = typing.get_type_hints(cls)
    values = {}
    for name, value in data.items():
        hint = hints[name]
        union = typing.get_origin(hint) in (types.UnionType, typing.Union)
        kinds = [typing.get_origin(a) or a for a in typing.get_args(hint)] if union else [typing.get_origin(hint) or hint]
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if value is None and type(None) in kinds:
            values[name] = None
        elif NoiseSchedule in kinds:
            values[name] = _typed(NoiseSchedule, value, f"{where}.{name}")
        elif float in kinds and number:
            values[name] = float(value)
        elif any(isinstance(value, k) and (k is bool or not isinstance(value, bool)) for k in kinds):
            values[name] = value
        else:
            shown = " or ".join(k.__name__ for k in kinds if k is not type(None))
            raise UsageError(f"{where}.{name} must be {shown}, got {value!r}")
    missing = [f.name for f in fields.values() if f.default is dataclasses.MISSING and f.name not in values]
    if missing:
        raise UsageError(f"{where} must name its {', '.join(missing)}")
    return cls(**values)


def _parse(data: Any, source: str, path: Path | None) -> Preset:
    if not isinstance(data, dict):
        raise UsageError(f"preset {source} is not a YAML mapping")
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise UsageError(f"preset {source} lacks {', '.join(missing)}")
    raw = dict(data["components"])
    raw.setdefault(PASTE_PARSER, dict(DEFAULT_PASTE_PARSER))
    for scale, role in BACKGROUND.items():
        raw.setdefault(role, dict(DEFAULT_BACKGROUND[scale]))
    if "schedule" in data:  # the form before schedules moved into components: the `prior` network's
        if "prior" not in raw or not isinstance(raw["prior"], dict) or "schedule" in raw["prior"]:
            raise UsageError(f"preset {source}: a top-level schedule belongs to a component",
                             hint="give each diffusion component its own `schedule:`")
        raw["prior"] = {**raw["prior"], "schedule": data["schedule"]}
    components = {role: _typed(Component, comp, f"preset {source}: component '{role}'") for role, comp in raw.items()}
    if not isinstance(data.get("faces") or {}, dict):
        raise UsageError(f"preset {source}: faces must be a mapping of front-end settings")
    return Preset(
        name=str(data["name"]),
        method=str(data["method"]),
        title=str(data.get("title", data["name"])),
        components=components,
        parameters=dict(data["parameters"]),
        face_size=int(data.get("face_size", 512)),
        faces=FaceSettings.from_block(data.get("faces") or {}, source),
        source=source,
        path=path,
        provenance=dict(data.get("provenance") or {}),
    )


def _load_text(text: str, source: str, path: Path | None = None) -> Preset:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UsageError(f"preset {source} is not valid YAML: {exc}") from None
    return _parse(data, source, path)


def builtin_names() -> list[str]:
    root = resources.files("facerestore_cli.builtin_presets")
    return sorted(p.name[: -len(".yaml")] for p in root.iterdir() if p.name.endswith(".yaml"))


def load_builtin(name: str) -> Preset:
    names = builtin_names()
    if name not in names:
        raise UsageError(f"unknown method '{name}'", hint=f"choose one of: {', '.join(names)} (or --preset FILE.yaml)")
    text = resources.files("facerestore_cli.builtin_presets").joinpath(f"{name}.yaml").read_text(encoding="utf-8")
    return _load_text(text, f"{name}.yaml")


def load_file(path: Path) -> Preset:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read preset {path}: {exc.strerror}") from None
    return _load_text(text, str(path), Path(path))
