"""Network registry: ``build_arch(name, config)``.

Each entry maps an arch name (the ``arch`` field of a weight registry entry) to "module:function"; the
module is imported only when that arch is built, so importing this package stays cheap. To add a network,
add one line to ``ARCHS`` whose function takes the plain config dict and returns an ``nn.Module``, and one to
``INPUT_SIZES``. A module may define ``check_config(config)``, raising ``ConfigProblem(key, rule)`` for a value the
architecture cannot take: ``check_config`` below runs it (and ``build_arch`` before building), so a bad config is a
usage error naming the key and the rule, not an error from deep inside the constructor.
"""

from __future__ import annotations

import importlib
import inspect
from typing import TYPE_CHECKING, Any, Mapping

from facerestore_cli.errors import UsageError

if TYPE_CHECKING:
    from torch import nn

ARCHS: dict[str, str] = {
    "unet": "facerestore_cli.archs.unet:build_unet",
    "swinir_difface": "facerestore_cli.archs.swinir:build_swinir_difface",
    "retinaface": "facerestore_cli.archs.retinaface:build_retinaface",
    "parsenet": "facerestore_cli.archs.facexlib_nets:build_parsenet",
    "sparnethd": "facerestore_cli.archs.sparnethd:build_sparnethd",
    "arcface": "facerestore_cli.archs.facexlib_nets:build_arcface",
    "rrdbnet": "facerestore_cli.archs.rrdbnet:build_rrdbnet",
}


# The square input size each network was built for, from its config (None: any size).
INPUT_SIZES = {
    "unet": lambda c: c["image_size"],
    "swinir_difface": lambda c: c["img_size"] * c.get("unshuffle_scale", 8),
    "sparnethd": lambda c: c["size"],
    "parsenet": lambda c: c.get("in_size", 512),
    "arcface": lambda c: 112,
    "retinaface": lambda c: None,
    "rrdbnet": lambda c: None,
}


class ConfigProblem(ValueError):
    """A network config value the architecture cannot take: the key and the rule it breaks."""

    def __init__(self, key: str, rule: str):
        super().__init__(f"{key}: {rule}")
        self.key, self.rule = key, rule


def check_keys(cls: type, config: Mapping[str, Any]) -> dict[str, Any]:
    """Every key of `config` is a parameter of cls's constructor, and every parameter without a default is given;
    returns the config the constructor will see (its defaults filled in)."""
    params = {name: p for name, p in inspect.signature(cls.__init__).parameters.items() if name != "self"}
    for key in config:
        if key not in params:
            raise ConfigProblem(key, f"not a setting of this network (valid: {', '.join(params)})")
    for name, param in params.items():
        if param.default is inspect.Parameter.empty and name not in config:
            raise ConfigProblem(name, "missing (this network has no default for it)")
    return {name: config.get(name, param.default) for name, param in params.items()}


def check_int(config: Mapping[str, Any], key: str, minimum: int = 1) -> int:
    """config[key] as an int ≥ minimum, or the ConfigProblem that says so."""
    value = config[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigProblem(key, f"must be a whole number ≥ {minimum}, not {value!r}")
    return value


def check_int_list(config: Mapping[str, Any], key: str, minimum: int = 1) -> list[int]:
    """config[key] as a non-empty list of ints ≥ minimum, or the ConfigProblem that says so."""
    value = config[key]
    if not isinstance(value, (list, tuple)) or not value or any(
            isinstance(v, bool) or not isinstance(v, int) or v < minimum for v in value):
        raise ConfigProblem(key, f"must be a list of whole numbers ≥ {minimum}, not {value!r}")
    return list(value)


def check_config(name: str, config: Mapping[str, Any], where: str) -> None:
    """Raise a UsageError naming `where` (e.g. "--model-config run.yaml"), the key and the rule when `config` cannot
    build network `name`; nothing is built."""
    module = importlib.import_module(_target(name)[0])
    check = getattr(module, "check_config", None)
    if check is None:
        return
    try:
        check(dict(config))
    except ConfigProblem as problem:
        raise UsageError(f"{where}: {name} config key '{problem.key}' {problem.rule}") from None


def _target(name: str) -> tuple[str, str]:
    try:
        module_name, function_name = ARCHS[name].split(":")
    except KeyError:
        raise UsageError(f"unknown network architecture {name!r}", hint=f"known: {', '.join(sorted(ARCHS))}") from None
    return module_name, function_name


def input_size(name: str, config: dict) -> int | None:
    return INPUT_SIZES[name](config)


def build_arch(name: str, config: dict) -> nn.Module:
    """Build network ``name`` from its config dict (on the current default device, e.g. ``meta``)."""
    module_name, function_name = _target(name)
    check_config(name, config, "network config")
    builder = getattr(importlib.import_module(module_name), function_name)
    try:
        return builder(dict(config))
    except (TypeError, ValueError) as exc:  # a rule no check_config states
        raise UsageError(f"bad config for network {name!r}: {exc}") from exc
