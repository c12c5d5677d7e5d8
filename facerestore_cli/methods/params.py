"""Typed method parameters: each method declares one frozen dataclass whose fields are its knobs.

A field made with `knob(flag, help, min=, max=, choices=)` (settings.py) carries its command-line flag, help text
and range; `Params.resolve(preset, given)` merges the preset's defaults with the flags given on the command line,
coerces and validates them (settings.merge, as for the face settings), and returns the typed object the method's
sampling core reads its arguments from (diffusers passes `num_inference_steps` the same way). Nothing here imports
torch: `run --help` lists every method's knobs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from facerestore_cli.errors import UsageError
from facerestore_cli.settings import Setting, knob, merge, settings_of

_TYPES = (bool, int, float, str)


@dataclass(frozen=True)
class MethodParams:
    """Base of every method's Params: the seed every method has. Subclasses add their knobs (all without defaults:
    the preset's `parameters` give every value) and may override `check` for rules between knobs."""

    # flag → why this method does not take it (shown when the flag is given anyway)
    refused: ClassVar[Mapping[str, str]] = {}

    seed: int = knob("--seed", "Random seed; every face draws from its own stream seeded by (seed, input path, face "
                               "index).", min=0)

    @classmethod
    def knobs(cls) -> tuple[Setting, ...]:
        specs = settings_of(cls)
        if len(specs) != len(dataclasses.fields(cls)):
            raise TypeError(f"{cls.__qualname__}: every field is a knob(...)")
        for spec in specs:
            if spec.type not in _TYPES or spec.optional:
                raise TypeError(f"{cls.__qualname__}.{spec.name}: knobs are bool, int, float or str")
        return specs

    @classmethod
    def flag(cls, name: str) -> str:
        """The flag of the knob `name`, for messages."""
        return next(k.flag for k in cls.knobs() if k.name == name)

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
        by_name = {by_flag[flag].name: value for flag, value in given.items()}
        values = merge(knobs, preset.parameters, by_name, lambda k: f"preset {preset.source}: {k.name} ({k.flag})")
        for k in knobs:
            if k.name not in values:
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

