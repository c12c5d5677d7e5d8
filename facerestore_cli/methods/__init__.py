"""Method registry. A preset's `method:` names a module that declares what the method takes and how it is built:

    Params                           a frozen `MethodParams` dataclass: the method's knobs (flags, help, ranges)
    required_weights(preset, params) the weight ids a run with these parameters needs
    build(preset, params, networks)  a `Restorer` (networks: a `NetworkLoader`)

Built-in methods live in this package; a preset file may bring its own method as `<method>.py` beside it. Method
modules stay free of torch at import (`run --help` reads every method's knobs); their sampling cores import it.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from dataclasses import dataclass
from types import ModuleType

from facerestore_cli.errors import UsageError
from facerestore_cli.methods.params import MethodParams
from facerestore_cli.settings import Setting

_REQUIRED = ("Params", "required_weights", "build")


@dataclass(frozen=True)
class Method:
    name: str
    module: ModuleType

    @property
    def Params(self) -> type[MethodParams]:  # noqa: N802 - the class the module declares
        return self.module.Params

    @property
    def gives_estimate(self) -> bool:
        """Whether its restorations carry an estimate of their own (Restoration.estimate; a module says
        GIVES_ESTIMATE = False when not)."""
        return getattr(self.module, "GIVES_ESTIMATE", True)

    def required_weights(self, preset, params) -> list[str]:
        return list(self.module.required_weights(preset, params))

    def build(self, preset, params, networks):
        return self.module.build(preset, params, networks)


def method_for(preset) -> Method:
    """The method a preset names: a module of this package, or `<method>.py` beside the preset file."""
    name = preset.method
    if not name.isidentifier():
        raise UsageError(f"preset {preset.source}: method '{name}' is not a module name")
    module = _builtin(name) or _beside(preset, name)
    if module is None:
        raise UsageError(f"preset {preset.source}: unknown method '{name}'",
                         hint=f"built-in methods: {', '.join(builtin_methods())}; or put {name}.py beside the preset")
    missing = [attr for attr in _REQUIRED if not hasattr(module, attr)]
    if missing or not issubclass(module.Params, MethodParams):
        raise UsageError(f"method module {module.__name__} is not a method: it needs Params (a MethodParams), "
                         f"required_weights and build" + (f"; missing {', '.join(missing)}" if missing else ""))
    return Method(name, module)


def _builtin(name: str) -> ModuleType | None:
    qualified = f"{__name__}.{name}"
    if importlib.util.find_spec(qualified) is None:
        return None
    return importlib.import_module(qualified)


def _beside(preset, name: str) -> ModuleType | None:
    if preset.path is None or not (preset.path.parent / f"{name}.py").is_file():
        return None
    path = (preset.path.parent / f"{name}.py").resolve()
    qualified = f"facerestore_preset_methods.{name}_{abs(hash(str(path)))}"
    if qualified not in sys.modules:
        spec = importlib.util.spec_from_file_location(qualified, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[qualified] = module
        spec.loader.exec_module(module)
    return sys.modules[qualified]


def builtin_methods() -> list[str]:
    from facerestore_cli import presets

    return sorted({presets.load_builtin(name).method for name in presets.builtin_names()})


def knob_table(presets_list) -> list[tuple[Setting, list[str]]]:
    """Every knob of the given presets' methods, once per flag, with the presets that take it. Two methods may
    share a flag only with the same meaning (type and allowed values)."""
    table: dict[str, tuple[Setting, list[str]]] = {}
    for preset in presets_list:
        for spec in method_for(preset).Params.knobs():
            known, users = table.setdefault(spec.flag, (spec, []))
            if (known.type, known.choices) != (spec.type, spec.choices):
                raise UsageError(f"method '{preset.method}' declares {spec.flag} unlike another method does")
            users.append(preset.name)
    return list(table.values())
