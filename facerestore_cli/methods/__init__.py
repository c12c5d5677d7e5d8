"""Method presets as compositions of shared parts. `build_method` is the only entry point the pipeline uses."""

from __future__ import annotations

import importlib
from typing import Any

from facerestore_cli.errors import UsageError

METHOD_MODULES = {
    "difface": "facerestore_cli.methods.difface",
    "dr2": "facerestore_cli.methods.dr2",
    "ipc_guided": "facerestore_cli.methods.ipc_guided",
}


def _module(preset):
    module_name = METHOD_MODULES.get(preset.method)
    if module_name is None:
        raise UsageError(f"preset {preset.source}: unknown method '{preset.method}'",
                         hint=f"known methods: {', '.join(sorted(METHOD_MODULES))}")
    return importlib.import_module(module_name)


def required_weights(preset, params: dict[str, Any]) -> list[str]:
    """The weight ids this run needs: a method may choose among its components by parameter (DR2's prior and
    optional enhancer); by default every component's weights."""
    module = _module(preset)
    if hasattr(module, "required_weights"):
        return module.required_weights(preset, params)
    return preset.weight_ids()


def build_method(preset, params: dict[str, Any], store, compute):
    """Build the restorer named by `preset.method`: an object with `face_size`, `weight_ids()` and
    `restore(faces [B,3,S,S] in [0,1], generators) -> [B,3,S,S] in [0,1]`."""
    return _module(preset).build(preset, params, store, compute)
