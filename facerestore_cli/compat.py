"""The one place that patches third-party import problems. Import it before basicsr.

basicsr 1.4.2 imports ``torchvision.transforms.functional_tensor``, a module torchvision removed in 0.17;
its one used function, ``rgb_to_grayscale``, lives on in ``torchvision.transforms.functional``.
"""

from __future__ import annotations

import sys
import types


def alias_functional_tensor() -> None:
    name = "torchvision.transforms.functional_tensor"
    if name in sys.modules:
        return
    try:
        import torchvision.transforms.functional_tensor  # noqa: F401  (older torchvision still has it)
        return
    except ImportError:
        pass
    from torchvision.transforms import functional

    shim = types.ModuleType(name)
    shim.rgb_to_grayscale = functional.rgb_to_grayscale
    sys.modules[name] = shim


alias_functional_tensor()
