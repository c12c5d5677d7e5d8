"""The one place that patches third-party imports. Import it before facexlib or basicsr.

facexlib's and basicsr's package `__init__` files import their whole toolkits — torchvision (and with it
torch._dynamo), scipy, data pipelines, compiled ops: about 2.5 s of start-up — while facerestore needs a few network
modules that import only torch. `light_package` registers such a package with its real folder but without running
its `__init__`; the `__init__` runs, into the same module, the first time anything asks the package for a name it
does not have yet (PEP 562 `__getattr__`), so code that uses the whole package still gets it. basicsr's
`archs/arch_util.py` (torchvision, compiled deformable convolutions, a logger) is registered the same way with the two
helpers SwinIR takes from it already in place. A package imported before this module is left as it is.

basicsr 1.4.2 (when its whole package does load) imports ``torchvision.transforms.functional_tensor``, a module
torchvision removed in 0.17; its one used function, ``rgb_to_grayscale``, lives on in
``torchvision.transforms.functional``. A finder at the end of ``sys.meta_path`` supplies that alias on demand, so
nothing imports torchvision until something asks for it.
"""

from __future__ import annotations

import collections.abc
import importlib.abc
import importlib.machinery
import importlib.util
import itertools
import sys
import types

import torch


def light_package(name: str, **preset) -> types.ModuleType:
    """sys.modules[name] as the package (or module) without its body run; `preset` names are there at once."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    module = importlib.util.module_from_spec(spec)
    module.__dict__.update(preset)

    def load_body(attr: str):
        if attr.startswith("__"):  # the import machinery probing (__path__, __all__ via hasattr): not a use
            raise AttributeError(attr)
        del module.__getattr__
        spec.loader.exec_module(module)
        return getattr(module, attr)

    module.__getattr__ = load_body
    sys.modules[name] = module
    parent, _, child = name.rpartition(".")
    if parent:
        setattr(sys.modules[parent], child, module)
    return module


def _to_2tuple(value):
    """basicsr.archs.arch_util.to_2tuple."""
    if isinstance(value, collections.abc.Iterable):
        return value
    return tuple(itertools.repeat(value, 2))


for _package in ("facexlib", "facexlib.detection", "facexlib.parsing", "facexlib.recognition", "basicsr",
                 "basicsr.archs", "basicsr.utils"):
    light_package(_package)
light_package("basicsr.archs.arch_util", to_2tuple=_to_2tuple, trunc_normal_=torch.nn.init.trunc_normal_)


class _FunctionalTensorAlias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    NAME = "torchvision.transforms.functional_tensor"

    def find_spec(self, fullname, path=None, target=None):
        return importlib.machinery.ModuleSpec(fullname, self) if fullname == self.NAME else None

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        from torchvision.transforms import functional

        module.rgb_to_grayscale = functional.rgb_to_grayscale


if not any(isinstance(finder, _FunctionalTensorAlias) for finder in sys.meta_path):
    sys.meta_path.append(_FunctionalTensorAlias())
