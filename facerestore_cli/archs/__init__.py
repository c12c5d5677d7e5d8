"""Network registry: ``build_arch(name, config)``.

Each entry maps an arch name (the ``arch`` field of a weight registry entry) to "module:function"; the
module is imported only when that arch is built, so importing this package stays cheap. To add a network,
add one line to ``ARCHS`` whose function takes the plain config dict and returns an ``nn.Module``, and one to
``INPUT_SIZES``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

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


def input_size(name: str, config: dict) -> int | None:
    return INPUT_SIZES[name](config)


def build_arch(name: str, config: dict) -> nn.Module:
    """Build network ``name`` from its config dict (on the current default device, e.g. ``meta``)."""
    try:
        target = ARCHS[name]
    except KeyError:
        raise UsageError(f"unknown network architecture {name!r}", hint=f"known: {', '.join(sorted(ARCHS))}") from None
    module_name, function_name = target.split(":")
    builder = getattr(importlib.import_module(module_name), function_name)
    try:
        return builder(dict(config))
    except TypeError as exc:  # unknown or missing config keys
        raise UsageError(f"bad config for network {name!r}: {exc}") from exc
