"""Turning a `run` (or `bench`) command line into checked RunOptions and the discovered inputs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from facerestore_cli.errors import NoInputsError, UsageError
from facerestore_cli.faces import DETECTOR_WEIGHTS
from facerestore_cli.weights.store import offline as offline_from_environment

# run options about finding faces in whole photos and pasting them back: refused with --aligned
PHOTO_ONLY = ("detector", "det_threshold", "det_min_side", "min_face", "min_score", "faces", "only_center_face",
              "largest_face", "bg_upsampler", "bg_tile", "draw_boxes")


def prepare_run(ctx: typer.Context, v: dict):
    """The checked RunOptions and the discovered inputs of a `run` (or `bench`) command line; v: its values."""
    from facerestore_cli.discover import discover, read_list
    from facerestore_cli.methods import method_for
    from facerestore_cli.options import RunOptions
    from facerestore_cli.shards import parse_shard

    given = [name for name in PHOTO_ONLY if ctx.get_parameter_source(name).name == "COMMANDLINE"]
    if v["aligned"] and given:
        flags = "/".join("--" + name.replace("_", "-") for name in given)
        raise UsageError(f"{flags} do not apply with --aligned (no detection, no paste-back)")
    detector = _detector_name(v["detector"])
    if v["metadata"] not in ("keep", "strip"):
        raise UsageError(f"--metadata must be keep or strip, not '{v['metadata']}'")
    fmt = _check_format(v["fmt"])
    preset = _load_preset(ctx, v["method"], v["preset_file"])
    check_network_configs(preset)
    chosen = method_for(preset)
    params = chosen.Params.resolve(preset, v["knobs"])
    faces = face_settings(preset, v)
    listed = [Path(p) for p in read_list(v["files_from"], null_separated=v["null"])] if v["files_from"] is not None else []
    inputs = list(v["inputs"] or [])
    if not inputs and not listed:
        raise UsageError("no inputs given", hint="pass image files or folders, or --files-from FILE")
    found = discover(inputs, v["output"], recursive=v["recursive"], fmt=fmt, listed=listed, base=v["base"])
    if not found.jobs:
        note = found.skipped_note()
        raise NoInputsError("no input images found" + (f": skipped {note}" if note else ""),
                            hint="images are JPEG, PNG, TIFF, WebP, BMP, GIF or HEIC; folders are scanned one level "
                                 "deep unless --recursive")
    opts = RunOptions(
        output=v["output"], preset=preset, method=chosen, params=params, batch_size=v["batch_size"],
        device=v["device"], precision=v["precision"], detector=detector, aligned=v["aligned"], save_faces=v["save_faces"], save_compare=v["save_compare"],
        report=v["report"], faces=faces, offline=v["offline"] or offline_from_environment(),
        force=v["force"], redo_failed=v["redo_failed"], wait_lock=v["wait_lock"], fail_fast=v["fail_fast"],
        max_failures=v["max_failures"], dry_run=v["dry_run"], fmt=fmt, quality=v["quality"], metadata=v["metadata"],
        provenance=v["provenance"], max_pixels=v["max_pixels"], identity_score=v["identity_score"],
        detect_max_side=v["detect_max_side"] or None, io_workers=v["io_workers"], compile=v["compile_networks"],
        channels_last=v["channels_last"], shard=parse_shard(v["shard"]), engine=_engine(v),
        ray_address=v["ray_address"],
    )
    return opts, found


def _engine(v: dict) -> str:
    if v["engine"] not in ("local", "ray"):
        raise UsageError(f"--engine must be local or ray, not '{v['engine']}'")
    if v["engine"] == "ray" and "," in v["device"]:
        raise UsageError("--engine ray uses every GPU of the Ray cluster: give --device auto or cpu, not a list")
    if v["ray_address"] is not None and v["engine"] != "ray":
        raise UsageError("--ray-address needs --engine ray")
    return v["engine"]


def face_settings(preset, v: dict):
    """The preset's face front end with the run's flags over it (faces/frontend.py)."""
    from facerestore_cli.faces.frontend import FaceSettings, parse_indices

    if v["only_center_face"] and v["largest_face"]:
        raise UsageError("--only-center-face and --largest-face contradict each other", hint="choose one")
    select = "center" if v["only_center_face"] else "largest" if v["largest_face"] else None
    given = {name: v[name] for name in ("det_threshold", "det_min_side", "min_face", "min_score", "upscale",
                                        "bg_upsampler", "bg_tile", "blend")}
    return FaceSettings.resolve(preset.faces, {**given, "select": select, "indices": parse_indices(v["faces"]),
                                               "draw_boxes": v["draw_boxes"] or None})


def check_network_configs(preset) -> None:
    """Every component's network config (its registry entry's under the preset's `config:`) is one its architecture
    can take: a usage error naming the component, key and rule otherwise, before anything is created."""
    from facerestore_cli.archs import check_config
    from facerestore_cli.weights.registry import load_registry

    registry = load_registry()
    for role, component in preset.components.items():
        for wid in {component["weights"], *(component.get("choices") or {}).values()}:
            if wid in registry:  # an unknown id fails where the weights are required, with its own message
                spec = registry[wid]
                check_config(spec.arch, {**(spec.config or {}), **(component.get("config") or {})},
                             f"preset {preset.source}: component '{role}'")


def _detector_name(value: str) -> str:
    """A detector by name or by its weight id (`retinaface-mobile0.25`), as its name."""
    by_weights = {wid: name for name, wid in DETECTOR_WEIGHTS.items()}
    if value in DETECTOR_WEIGHTS or value in by_weights:
        return by_weights.get(value, value)
    raise UsageError(f"unknown detector '{value}'",
                     hint=f"choose one of: {', '.join(DETECTOR_WEIGHTS)} (or their weight ids)")


def check_report(report: Optional[Path]) -> None:
    """--report must be a file that can be written (replaced by a rename in its folder): a usage error otherwise."""
    if report is None:
        return
    if report.is_dir():
        raise UsageError(f"--report {report} is a folder", hint="name the report file, e.g. --report run.jsonl")
    folder = next(p for p in [report.absolute().parent, *report.absolute().parents] if p.exists())
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"--report {report} cannot be written: {folder} is not a writable folder")


def _load_preset(ctx: typer.Context, method: str, preset_file: Optional[Path]):
    from facerestore_cli import presets

    if preset_file is not None and ctx.get_parameter_source("method").name == "COMMANDLINE":
        raise UsageError("--method and --preset both name a preset", hint="give one of them")
    return presets.load_file(preset_file) if preset_file else presets.load_builtin(method)


def _check_format(fmt: Optional[str]) -> Optional[str]:
    if fmt is None:
        return None
    fmt = fmt.lower()
    if fmt not in ("png", "jpg", "jpeg", "webp", "tiff", "tif"):
        raise UsageError(f"unsupported --format '{fmt}'", hint="choose png, jpg, webp or tiff")
    return {"jpeg": "jpg", "tif": "tiff"}.get(fmt, fmt)
