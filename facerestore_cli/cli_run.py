"""Turning a `run` (or `bench`) command line into checked RunOptions and the discovered inputs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import typer

from facerestore_cli.errors import NoInputsError, UsageError
from facerestore_cli.settings import EXTRAS, FACES, IO, METHOD, STDOUT, setting, settings_of


@dataclass
class RunCommand:
    """The flags of `run` that are not run options: which inputs and preset, which faces, what stdout shows."""

    inputs: list[Path] | None = setting(default=None, argument=True, metavar="PHOTO|FOLDER...", whole_run=True,
                                        help="Image files and/or folders.")
    recursive: bool = setting("-r", "--recursive", default=False, panel=IO, whole_run=True,
                              help="Descend into sub-folders.")
    files_from: str | None = setting("--files-from", default=None, panel=IO, metavar="FILE|-", whole_run=True,
                                     help="Read input paths from FILE (one per line), '-' for stdin.")
    base: Path | None = setting("--base", default=None, panel=IO, metavar="DIR", whole_run=True, run_only=True,
                                help="Outputs of named files mirror their paths relative to DIR (default: their "
                                     "common folder).")
    method: str = setting("-m", "--method", default="difface", panel=METHOD, metavar="NAME",
                          help="Method preset (see `facerestore methods`).")
    preset_file: Path | None = setting("--preset", default=None, panel=METHOD, metavar="FILE.yaml",
                                       help="A preset file instead of --method.")
    only_center_face: bool = setting("--only-center-face", default=False, panel=FACES, photo_only=True,
                                     help="Restore only the face nearest the photo's center.")
    largest_face: bool = setting("--largest-face", default=False, panel=FACES, photo_only=True,
                                 help="Restore only the largest face.")
    review: bool = setting("--review", default=False, panel=EXTRAS, run_only=True,
                           help="Also write OUT/review.html when the run ends: every photo of OUT before/after, its "
                                "faces' identity scores and gate verdicts (see `facerestore review`).")
    quiet: bool = setting("-q", "--quiet", default=False, panel=STDOUT, run_only=True,
                          help="No progress output (errors still go to stderr).")
    verbose: bool = setting("-v", "--verbose", default=False, panel=STDOUT, run_only=True,
                            help="A line per photo on stderr, naming it.")
    print_outputs: bool = setting("--print-outputs", default=False, panel=STDOUT, run_only=True,
                                  help="Write each finished output path to stdout (and nothing else).")
    json_out: bool = setting("--json", default=False, panel=STDOUT, run_only=True,
                             help="JSON Lines: one object per photo (its report record), then the summary.")
    null: bool = setting("-0", "--null", default=False, panel=STDOUT, run_only=True,
                         help="NUL-separated paths for --files-from and --print-outputs.")


def run_settings() -> tuple:
    """Every setting `run` takes a flag for, but the method knobs: the command's own, the run options and the face
    settings."""
    from facerestore_cli.faces.settings import FaceSettings
    from facerestore_cli.options import RUN_SETTINGS

    return (*settings_of(RunCommand), *RUN_SETTINGS, *(s for s in settings_of(FaceSettings) if s.flags))


def prepare_run(ctx: typer.Context, v: dict):
    """The checked RunOptions and the discovered inputs of a `run` (or `bench`) command line; v: its values (by
    each setting's dest; the knobs as flag → value)."""
    from facerestore_cli.discover import discover, read_list
    from facerestore_cli.methods import method_for
    from facerestore_cli.options import RUN_SETTINGS, RunOptions

    everything = run_settings()
    given = [s for s in everything if getattr(ctx.get_parameter_source(s.dest), "name", None) == "COMMANDLINE"]
    refused = [s.flag for s in given if s.photo_only]
    if v["aligned"] and refused:
        raise UsageError(f"{'/'.join(refused)} do not apply with --aligned (no detection, no paste-back)")
    preset = _load_preset(ctx, v["method"], v["preset"])
    check_network_configs(preset)
    chosen = method_for(preset)
    params = chosen.Params.resolve(preset, v["knobs"])
    faces = face_settings(preset, v)
    options = {s.name: s.parse(v[s.dest]) if s.parse and v[s.dest] is not None else v[s.dest]
               for s in RUN_SETTINGS}
    words = [w for s in given if not (s.run_only or s.whole_run) for w in s.line_args(v[s.dest])]
    words += [w for knob in chosen.Params.knobs() for w in knob.line_args(v["knobs"].get(knob.flag))]
    opts = RunOptions(preset=preset, method=chosen, params=params, faces=faces, command_line=tuple(words), **options)
    opts.check()
    listed = [Path(p) for p in read_list(v["files_from"], null_separated=v["null"])] if v["files_from"] is not None else []
    inputs = list(v["inputs"] or [])
    if not inputs and not listed:
        raise UsageError("no inputs given", hint="pass image files or folders, or --files-from FILE")
    found = discover(inputs, opts.output, recursive=v["recursive"], fmt=opts.fmt, listed=listed, base=v["base"])
    if not found.jobs:
        note = found.skipped_note()
        raise NoInputsError("no input images found" + (f": skipped {note}" if note else ""),
                            hint="images are JPEG, PNG, TIFF, WebP, BMP, GIF or HEIC; folders are scanned one level "
                                 "deep unless --recursive")
    return opts, found


def face_settings(preset, v: dict):
    """The preset's face front end with the run's flags over it (faces/settings.py)."""
    from facerestore_cli.faces.settings import FaceSettings

    if v["only_center_face"] and v["largest_face"]:
        raise UsageError("--only-center-face and --largest-face contradict each other", hint="choose one")
    select = "center" if v["only_center_face"] else "largest" if v["largest_face"] else None
    given = {s.name: v[s.dest] for s in settings_of(FaceSettings) if s.flags}
    return preset.faces.given({**given, "select": select, "draw_boxes": given["draw_boxes"] or None})


def check_network_configs(preset) -> None:
    """Every component's network config (its registry entry's under the preset's `config:`) is one its architecture
    can take: a usage error naming the component, key and rule otherwise, before anything is created."""
    from facerestore_cli.archs import check_config
    from facerestore_cli.weights.store import WeightStore

    store = WeightStore()
    for role, component in preset.components.items():
        for wid in component.weight_ids():
            if wid in store.registry:  # an unknown id fails where the weights are required, with its own message
                where = f"preset {preset.source}: component '{role}'"
                check_config(store.spec(wid).arch, store.config(wid, component.config), where)
                recorded = store.recorded_config(wid)
                clash = sorted(k for k, v in (component.config or {}).items() if k in recorded and recorded[k] != v)
                if clash:
                    raise UsageError(f"{where} configures {', '.join(f'{k}={component.config[k]!r}' for k in clash)}"
                                     f", but the {wid} file in the cache was made with "
                                     f"{', '.join(f'{k}={recorded[k]!r}' for k in clash)}",
                                     hint=f"drop those keys from the component's config: (the cache records them "
                                          f"in {store.config_path(wid).name})")


def _load_preset(ctx: typer.Context, method: str, preset_file: Optional[Path]):
    from facerestore_cli import presets

    if preset_file is not None and ctx.get_parameter_source("method").name == "COMMANDLINE":
        raise UsageError("--method and --preset both name a preset", hint="give one of them")
    return presets.load_file(preset_file) if preset_file else presets.load_builtin(method)
