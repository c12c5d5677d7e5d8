"""Typer signatures derived from declared settings (settings.py): each option of `run` and `bench`, method knobs
included, comes from its one declaration; a former flag name stays a hidden option that still works."""

from __future__ import annotations

import dataclasses
import functools
import inspect
from pathlib import Path
from typing import Any, Callable, Optional

import typer

from facerestore_cli.errors import UsageError
from facerestore_cli.settings import PANELS, Setting

_OLD = "__old_"  # the prefix of a former flag's hidden parameter


def parameter(spec: Setting, help_suffix: str = "") -> inspect.Parameter:
    """The Typer parameter of a setting: a value from the preset (a knob, a face setting) defaults to None, meaning
    not given; a run option defaults to its field's default; one without a default is required."""
    kind = list[Path] if spec.type is list else str if spec.type is tuple else spec.type
    preset = spec.preset_default
    annotation = Optional[kind] if preset or spec.optional or spec.default is None else kind
    default = None if preset else ... if spec.default is dataclasses.MISSING else spec.default
    if spec.argument:
        info = typer.Argument(default, help=spec.help, show_default=False, metavar=spec.shown_metavar)
    else:
        bounds = {} if preset else {"min": spec.min, "max": spec.max}
        info = typer.Option(default, *spec.flags, metavar=spec.shown_metavar, rich_help_panel=spec.panel,
                            help=spec.help + help_suffix, **({"show_default": False} if preset else {}), **bounds)
    return inspect.Parameter(spec.dest, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=info)


def _old_parameter(spec: Setting, old: str) -> inspect.Parameter:
    kind = str if spec.type is tuple else spec.type
    return inspect.Parameter(_OLD + old.lstrip("-").replace("-", "_"), inspect.Parameter.KEYWORD_ONLY,
                             annotation=Optional[kind], default=typer.Option(None, old, hidden=True))


def command(func: Callable[..., Any], settings: tuple[Setting, ...], knobs=(), own: tuple = ()) -> Callable[..., Any]:
    """`func(ctx, values, **own)` as a Typer command whose options are the settings' (in the order of their help
    panels), one per method knob (knobs: (Setting, presets that take it) pairs), and `own` (inspect.Parameters,
    the command's own options, shown first). values: each setting's value by its dest, and `knobs` (flag → value or
    None); a former flag fills its setting's value."""
    params = [parameter(s) for s in settings] + [parameter(spec, f" ({', '.join(users)})") for spec, users in knobs]
    everything = [*settings, *(spec for spec, _ in knobs)]
    olds = {_OLD + old.lstrip("-").replace("-", "_"): (spec, old) for spec in everything for old in spec.old}
    order = {s.dest: PANELS.index(s.panel) if s.panel in PANELS else -1 for s in everything}
    params.sort(key=lambda p: order[p.name])
    params += [_old_parameter(spec, old) for spec, old in olds.values()]
    knob_dests = {spec.dest: spec.flag for spec, _ in knobs}

    @functools.wraps(func)
    def run_command(ctx: typer.Context, **values):
        for name, (spec, old) in olds.items():
            value = values.pop(name)
            if value is not None:
                if values[spec.dest] not in (None, spec.default):
                    raise UsageError(f"{old} and {spec.flag} both given", hint=f"{old} is the former name of "
                                                                               f"{spec.flag}")
                values[spec.dest] = value
        mine = {p.name: values.pop(p.name) for p in own}
        values["knobs"] = {flag: values.pop(dest) for dest, flag in knob_dests.items()}
        return func(ctx, values, **mine)

    ctx = inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)
    positional = [p for p in params if p.kind is not inspect.Parameter.KEYWORD_ONLY]
    keyword = [p for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]
    run_command.__signature__ = inspect.Signature([ctx, *positional, *own, *keyword])  # own options shown first
    return run_command
