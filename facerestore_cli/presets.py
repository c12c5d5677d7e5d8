"""Method presets: YAML files declaring a method's components, weights and default parameters."""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from facerestore_cli.errors import UsageError

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
class Preset:
    name: str
    method: str
    title: str
    components: dict[str, dict[str, Any]]
    parameters: dict[str, Any]
    face_size: int = 512
    schedule: dict[str, Any] = field(default_factory=dict)
    faces: dict[str, Any] = field(default_factory=dict)  # the face front end's settings (faces/frontend.py)
    source: str = ""  # what messages call it: the built-in file's name, or the path given
    path: Path | None = None  # the file, for presets given with --preset (a method module may sit beside it)
    raw: dict[str, Any] = field(default_factory=dict)


def _parse(data: Any, source: str, path: Path | None) -> Preset:
    if not isinstance(data, dict):
        raise UsageError(f"preset {source} is not a YAML mapping")
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise UsageError(f"preset {source} lacks {', '.join(missing)}")
    for name, comp in data["components"].items():
        if not isinstance(comp, dict) or "weights" not in comp:
            raise UsageError(f"preset {source}: component '{name}' must name its weights")
    components = dict(data["components"])
    components.setdefault(PASTE_PARSER, dict(DEFAULT_PASTE_PARSER))
    for scale, role in BACKGROUND.items():
        components.setdefault(role, dict(DEFAULT_BACKGROUND[scale]))
    if not isinstance(data.get("faces", {}), dict):
        raise UsageError(f"preset {source}: faces must be a mapping of front-end settings")
    return Preset(
        name=str(data["name"]),
        method=str(data["method"]),
        title=str(data.get("title", data["name"])),
        components=components,
        parameters=dict(data["parameters"]),
        face_size=int(data.get("face_size", 512)),
        schedule=dict(data.get("schedule", {})),
        faces=dict(data.get("faces") or {}),
        source=source,
        path=path,
        raw=data,
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
