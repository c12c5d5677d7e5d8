"""Network architectures: one module per architecture, each registering a descriptor beside its builder with
`@register_arch` (timm's `@register_model`, spandrel's descriptors): how it is built from a plain config dict, the
square input size it was built for, what its output means and how many condition channels its input carries.

``MODULES`` says only where each architecture lives: its module is imported when the architecture is first asked
for, so importing this package stays cheap (`--help` imports no torch). A module may define
``check_config(config)``, raising ``ConfigProblem(key, rule)`` for a value the architecture cannot take:
``check_config`` below runs it (and ``build_arch`` before building), so a bad config is a usage error naming the key
and the rule, not an error from deep inside the constructor.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping

from facerestore_cli.errors import UsageError

if TYPE_CHECKING:
    from torch import nn

MODULES: dict[str, str] = {
    "unet": "facerestore_cli.archs.unet",
    "swinir_difface": "facerestore_cli.archs.swinir",
    "retinaface": "facerestore_cli.archs.retinaface",
    "parsenet": "facerestore_cli.archs.facexlib_nets",
    "sparnethd": "facerestore_cli.archs.sparnethd",
    "arcface": "facerestore_cli.archs.facexlib_nets",
    "rrdbnet": "facerestore_cli.archs.rrdbnet",
    "tv_alexnet": "facerestore_cli.archs.metric_nets",
    "tv_vgg16": "facerestore_cli.archs.metric_nets",
    "lpips_linear": "facerestore_cli.archs.metric_nets",
    "fid_inception": "facerestore_cli.archs.metric_nets",
    "ipc_mask": "facerestore_cli.archs.mask_branch",
}
# what a network's output means
EPS, EPS_VARIANCE, IMAGE = "eps", "eps+variance", "image"  # ε̂; ε̂ then the learned-range variance; an image
DETECTIONS, PARSING, EMBEDDING = "detections", "parsing", "embedding"
MASK = "mask"  # one logit per pixel


@dataclass(frozen=True)
class Architecture:
    """What a network needs and gives, from its config: build(config) → nn.Module; input_size: the square size it
    was built for (None: any); output: what it returns (EPS, EPS_VARIANCE, IMAGE, ...); condition_channels: the
    channels of its input after the image's (an SR3-style condition)."""

    name: str
    build: Callable[[dict], Any]
    input_size: Callable[[dict], int | None]
    output: Callable[[dict], str]
    condition_channels: Callable[[dict], int]


_REGISTERED: dict[str, Architecture] = {}


def register_arch(name: str, *, input_size: Callable[[dict], int | None], output: str | Callable[[dict], str],
                  condition_channels: Callable[[dict], int] = lambda config: 0):
    """Decorates an architecture's builder (config dict → nn.Module) with its descriptor."""
    def register(build):
        meaning = output if callable(output) else (lambda config: output)
        _REGISTERED[name] = Architecture(name, build, input_size, meaning, condition_channels)
        return build
    return register


def architecture(name: str) -> Architecture:
    """The descriptor of architecture `name` (its module imported on first use)."""
    if name not in MODULES:
        raise UsageError(f"unknown network architecture {name!r}", hint=f"known: {', '.join(sorted(MODULES))}")
    if name not in _REGISTERED:
        importlib.import_module(MODULES[name])
    return _REGISTERED[name]


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
    check = getattr(importlib.import_module(architecture(name).build.__module__), "check_config", None)
    if check is None:
        return
    try:
        check(dict(config))
    except ConfigProblem as problem:
        raise UsageError(f"{where}: {name} config key '{problem.key}' {problem.rule}") from None


def input_size(name: str, config: dict) -> int | None:
    return architecture(name).input_size(config)


def build_arch(name: str, config: dict) -> nn.Module:
    """Build network ``name`` from its config dict (on the current default device, e.g. ``meta``)."""
    check_config(name, config, "network config")
    try:
        return architecture(name).build(dict(config))
    except (TypeError, ValueError) as exc:  # a rule no check_config states
        raise UsageError(f"bad config for network {name!r}: {exc}") from exc
