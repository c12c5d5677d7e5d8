"""Settings declared once. A dataclass field made with `setting(...)` (a run option, a face setting, a flag of the
`run` command) or `knob(...)` (a method's parameter) carries its command-line flag, help panel, help text, type and
allowed values, and what it means for a run: whether it shapes the output (and so enters the rerun signature and
the records), whether it applies only to whole photos (refused with --aligned), whether it only says where results
go or how a run talks (`bench` leaves it out) and whether it concerns the run's inputs as a whole (bench's start-up
probe, which runs one photo, leaves it out). Everything else is derived from the fields: the Typer signatures of
`run` and `bench` (cli_signature.py), a preset block with flags over it resolved into the frozen dataclass
(`merge`), the rerun signature and records (ledger.py), the command line of bench's start-up probe. A new run flag
is one field.

Nothing here imports torch or typer: `run --help` reads every declaration.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from facerestore_cli.errors import UsageError

_KEY = "facerestore.setting"

# help panels of `run` and `bench`, in the order their help shows them
IO, METHOD, KNOBS, DEVICE = "Input and output", "Method", "Method knobs (default: the preset's)", "Device"
FACES, PASTE = "Faces (default: the preset's)", "Paste-back and output size"
ARCHIVAL, EXTRAS, STDOUT, BENCH = "Archival runs", "Output format and extras", "Progress and stdout", "Benchmark"
PANELS = (IO, METHOD, KNOBS, FACES, PASTE, DEVICE, ARCHIVAL, EXTRAS, STDOUT, BENCH)

RESTORATION, OUTPUT = "restoration", "output"  # what a setting shapes: the restored pixels, or the file written


@dataclass(frozen=True)
class Setting:
    """One declared setting, as its field made it."""

    name: str  # the field name, as presets, reports and the rerun signature spell it
    flags: tuple[str, ...]  # command-line names, shown; () for a setting only a preset gives
    type: Any  # the value's type without None: bool, int, float, str, Path, tuple (of ints) or list (of Paths)
    optional: bool  # None is a value (not given, or "no such thing")
    default: Any  # dataclasses.MISSING: a preset must give it, or (a run option) the command line must
    help: str = ""
    panel: str = ""
    metavar: str | None = None
    min: float | None = None
    max: float | None = None
    choices: tuple | None = None
    old: tuple[str, ...] = ()  # former flags, still taken, not shown
    shapes: str | None = None  # RESTORATION (records' parameters and rerun signature) or OUTPUT (rerun signature)
    record_as: str | None = None  # its key in the rerun signature, when not its name
    photo_only: bool = False  # finds faces in whole photos or pastes them back: refused with --aligned
    run_only: bool = False  # where results go, how a run talks or stops: not a benchmark's
    whole_run: bool = False  # which inputs, or their spread over processes: not one photo's (bench's start-up)
    parse: Callable[[Any], Any] | None = None  # the command line's value → the field's
    preset_default: bool = False  # the command line's default is None: the preset (or the field) decides
    argument: bool = False  # a positional argument

    @property
    def flag(self) -> str | None:
        """The flag messages name: the first long one."""
        return next((f for f in self.flags if f.startswith("--")), self.flags[0] if self.flags else None)

    @property
    def dest(self) -> str:
        """The Python name of the command line's value (`--dr2-prior` → `dr2_prior`)."""
        return self.flag.lstrip("-").replace("-", "_") if self.flag else self.name

    @property
    def shown_metavar(self) -> str:
        if self.metavar is not None:
            return self.metavar
        if self.type is bool:
            return ""
        if self.choices:
            return "|".join(map(str, self.choices))
        return {int: "N", float: "X"}.get(self.type, "TEXT")

    def describe_range(self) -> str:
        if self.choices:
            return f"one of {', '.join(map(str, self.choices))}"
        if self.min is not None and self.max is not None:
            return f"in [{self.min:g}, {self.max:g}]"
        return f"≥ {self.min:g}" if self.min is not None else f"≤ {self.max:g}"

    def line_args(self, value: Any) -> list[str]:
        """The command-line words that give this value."""
        if value is None or value is False:
            return []
        if value is True:
            return [self.flag]
        return [self.flag, ",".join(map(str, value)) if isinstance(value, (tuple, list)) else str(value)]


def setting(*flags: str, help: str = "", panel: str = "", default: Any = dataclasses.MISSING,
            metavar: str | None = None, min: float | None = None, max: float | None = None,
            choices: tuple | None = None, old: tuple[str, ...] = (), shapes: str | None = None,
            record_as: str | None = None, photo_only: bool = False, run_only: bool = False, whole_run: bool = False,
            parse: Callable[[Any], Any] | None = None, preset_default: bool = False, argument: bool = False) -> Any:
    """A dataclass field declaring a setting (see `Setting`)."""
    meta = {"flags": flags, "help": help, "panel": panel, "metavar": metavar, "min": min, "max": max,
            "choices": tuple(choices) if choices else None, "old": old, "shapes": shapes, "record_as": record_as,
            "photo_only": photo_only, "run_only": run_only, "whole_run": whole_run, "parse": parse,
            "preset_default": preset_default, "argument": argument}
    return dataclasses.field(default=default, metadata={_KEY: meta})


def knob(flag: str, help: str, *, min: float | None = None, max: float | None = None,
         choices: tuple[str, ...] | None = None, shown: str | None = None, old: tuple[str, ...] = ()) -> Any:
    """A method parameter: a setting without a default (the preset gives it) in the knobs panel."""
    return setting(flag, help=help, panel=KNOBS, min=min, max=max, choices=choices, metavar=shown, old=old,
                   shapes=RESTORATION, preset_default=True)


def settings_of(cls) -> tuple[Setting, ...]:
    """The declared settings of a dataclass, in field order (fields made otherwise are not settings)."""
    hints = typing.get_type_hints(cls)
    found = []
    for f in dataclasses.fields(cls):
        meta = f.metadata.get(_KEY)
        if meta is None:
            continue
        kind, optional = _base_type(hints[f.name])
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        found.append(Setting(f.name, type=kind, optional=optional, default=default, **meta))
    return tuple(found)


def _base_type(hint) -> tuple[Any, bool]:
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        kinds = [a for a in args if a is not type(None)]
        return _base_type(kinds[0])[0], len(kinds) < len(args)
    return typing.get_origin(hint) or hint, False


def merge(specs: tuple[Setting, ...], block: Mapping[str, Any], given: Mapping[str, Any],
          where: Callable[[Setting], str], whole_floats: bool = False) -> dict[str, Any]:
    """A preset block's values (name → value) with the values given on the command line over them (name → value,
    None: not given), each coerced to its setting's type and checked against its range: a usage error names the
    flag, or where(spec) for a value from the block. Names neither gives are left out. whole_floats: a float
    setting the block spells as a whole number stays one (the face settings' records, and so the rerun signatures
    runs have written, keep the preset's spelling)."""
    values = {}
    for spec in specs:
        if given.get(spec.name) is not None:
            raw = given[spec.name]
            values[spec.name] = coerce(spec, spec.parse(raw) if spec.parse and isinstance(raw, str) else raw,
                                       spec.flag or spec.name)
        elif spec.name in block:
            value = coerce(spec, block[spec.name], where(spec))
            whole = whole_floats and spec.type is float and type(block[spec.name]) is int
            values[spec.name] = block[spec.name] if whole else value
    return values


def coerce(spec: Setting, value: Any, where: str) -> Any:
    """value as spec's type, within its range (a usage error saying where it came from otherwise)."""
    if value is None and spec.optional:
        return None
    kind = spec.type
    if kind is bool:
        if not isinstance(value, bool):
            raise UsageError(f"{where} must be true or false, got {value!r}")
    elif kind is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
            raise UsageError(f"{where} must be a whole number, got {value!r}")
        value = int(value)
    elif kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            raise UsageError(f"{where} must be a number, got {value!r}")
        value = float(value)
    elif kind is tuple:
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, int) and not isinstance(v, bool)
                                                          for v in value):
            raise UsageError(f"{where} must be a list of whole numbers, got {value!r}")
        value = tuple(value)
    elif kind is Path:
        value = Path(value)
    elif not isinstance(value, str):
        raise UsageError(f"{where} must be text, got {value!r}")
    if kind is not tuple and ((spec.choices and value not in spec.choices) or
                              (spec.min is not None and value < spec.min) or
                              (spec.max is not None and value > spec.max)):
        raise UsageError(f"{where} must be {spec.describe_range()}, got {value!r}")
    return value

