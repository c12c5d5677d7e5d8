"""Typed method parameters: each method declares one frozen dataclass whose fields are its knobs.

A field made with `knob(flag, help, min=, max=, choices=)` carries its command-line flag, help text and range;
`Params.resolve(preset, given)` merges the preset's defaults with the flags given on the command line, coerces and
validates them, and returns the typed object that travels from the flag to the math unchanged (diffusers passes
`num_inference_steps` the same way). Nothing here imports torch: `run --help` lists every method's knobs.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from facerestore_cli.errors import UsageError

_KNOB = "facerestore.knob"
_TYPES = (bool, int, float, str)


@dataclass(frozen=True)
class KnobSpec:
    """What the command line needs to know of one knob."""

    name: str  # the field name, as presets and reports spell it
    flag: str
    type: type  # bool, int, float or str
    help: str
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] | None = None
    shown: str | None = None  # metavar for values checked against the preset (DR2's prior choices)

    @property
    def dest(self) -> str:
        """The Python name of the flag (`--dr2-prior` → `dr2_prior`)."""
        return self.flag.lstrip("-").replace("-", "_")

    @property
    def metavar(self) -> str | None:
        if self.shown:
            return self.shown
        if self.choices:
            return "|".join(self.choices)
        return {int: "N", float: "X"}.get(self.type)

    def describe_range(self) -> str:
        if self.choices:
            return f"one of {', '.join(self.choices)}"
        if self.min is not None and self.max is not None:
            return f"in [{self.min:g}, {self.max:g}]"
        return f"≥ {self.min:g}" if self.min is not None else f"≤ {self.max:g}"


def knob(flag: str, help: str, *, min: float | None = None, max: float | None = None,
         choices: tuple[str, ...] | None = None, shown: str | None = None) -> Any:
    """A Params field: a knob with its flag, help text and allowed values (no default: presets give it)."""
    return dataclasses.field(metadata={_KNOB: {"flag": flag, "help": help, "min": min, "max": max,
                                               "choices": tuple(choices) if choices else None, "shown": shown}})


@dataclass(frozen=True)
class MethodParams:
    """Base of every method's Params: the seed every method has. Subclasses add their knobs (all without defaults:
    the preset's `parameters` give every value) and may override `check` for rules between knobs."""

    # flag → why this method does not take it (shown when the flag is given anyway)
    refused: ClassVar[Mapping[str, str]] = {}

    seed: int = knob("--seed", "Random seed; every face draws from its own stream seeded by (seed, input path, face "
                               "index).", min=0)

    @classmethod
    def knobs(cls) -> tuple[KnobSpec, ...]:
        hints = typing.get_type_hints(cls)
        specs = []
        for f in dataclasses.fields(cls):
            meta = f.metadata.get(_KNOB)
            if meta is None:
                raise TypeError(f"{cls.__qualname__}.{f.name} is not a knob(...) field")
            if hints[f.name] not in _TYPES:
                raise TypeError(f"{cls.__qualname__}.{f.name}: knobs are bool, int, float or str")
            specs.append(KnobSpec(f.name, type=hints[f.name], **meta))
        return tuple(specs)

    @classmethod
    def resolve(cls, preset, given: Mapping[str, Any] | None = None):
        """The preset's parameters overridden by the flags given (flag → value; None means not given), coerced
        and validated. A flag this method does not use, a missing or unknown preset parameter and a value out of
        range are usage errors naming the flag (and the preset file when the value came from it)."""
        knobs = cls.knobs()
        by_flag = {k.flag: k for k in knobs}
        given = {flag: value for flag, value in (given or {}).items() if value is not None}
        for flag in given:
            if flag not in by_flag:
                note = cls.refused.get(flag)
                raise UsageError(f"{flag} is not used by method '{preset.name}'" + (f": {note}" if note else ""),
                                 hint=f"it takes: {', '.join(by_flag)}")
        unknown = sorted(set(preset.parameters) - {k.name for k in knobs})
        if unknown:
            raise UsageError(f"preset {preset.source}: unknown parameter(s) {', '.join(unknown)} for method "
                             f"'{preset.method}'", hint=f"it takes: {', '.join(k.name for k in knobs)}")
        values = {}
        for k in knobs:
            if k.flag in given:
                values[k.name] = _coerce(k, given[k.flag], k.flag)
            elif k.name in preset.parameters:
                values[k.name] = _coerce(k, preset.parameters[k.name], f"preset {preset.source}: {k.name} ({k.flag})")
            else:
                raise UsageError(f"preset {preset.source} lacks parameter '{k.name}' ({k.flag})")
        params = cls(**values)
        params.check(preset)
        return params

    def check(self, preset) -> None:
        """Rules between knobs or against the preset (a schedule's length); raise UsageError naming the flag."""

    def as_record(self) -> dict[str, Any]:
        """The parameters for reports, provenance and the rerun signature: the method's knobs, then the seed."""
        record = dataclasses.asdict(self)
        record["seed"] = record.pop("seed")
        return record


def _coerce(k: KnobSpec, value: Any, where: str) -> Any:
    if k.type is bool:
        if not isinstance(value, bool):
            raise UsageError(f"{where} must be true or false, got {value!r}")
    elif k.type is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
            raise UsageError(f"{where} must be a whole number, got {value!r}")
        value = int(value)
    elif k.type is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            raise UsageError(f"{where} must be a number, got {value!r}")
        value = float(value)
    elif not isinstance(value, str):
        raise UsageError(f"{where} must be text, got {value!r}")
    if (k.choices and value not in k.choices) or (k.min is not None and value < k.min) or \
            (k.max is not None and value > k.max):
        raise UsageError(f"{where} must be {k.describe_range()}, got {value!r}")
    return value
