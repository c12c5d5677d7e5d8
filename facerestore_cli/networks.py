"""Loaded networks: a component ready to run, described by its architecture's descriptor (archs/, after
spandrel's), and the loader that builds them from the weights registry, once per (weights, config) in a run."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from facerestore_cli.archs import IMAGE, architecture, build_arch
from facerestore_cli.archs.layout import layout_of
from facerestore_cli.device import Compute
from facerestore_cli.presets import Component


@dataclass(frozen=True, eq=False)
class Network:
    """A component ready to run: its module (eval mode, frozen, on the run's device), the configuration it was
    built with (the registry's, updated by the preset's), what its architecture's descriptor says of it (input
    size, output meaning, condition channels), and forwards that apply the run's precision and return fp32."""

    weight_id: str
    config: Mapping[str, Any]
    module: nn.Module
    compute: Compute
    input_size: int | None
    output: str = IMAGE  # archs.EPS, EPS_VARIANCE, IMAGE, ...
    condition_channels: int = 0
    runner: Any = None  # the compiled module (--compile), else None

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        """Forward without autograd."""
        with torch.no_grad():
            return self.forward(*inputs)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        """Forward with autograd (guidance through the network); under autocast, fp32 out."""
        with self.compute.autocast():
            return (self.module if self.runner is None else self.runner)(*inputs).float()


@dataclass
class NetworkLoader:
    """Builds components from the weights store on one device: the architecture named by the registry entry,
    configured by the entry's `config` updated by the component's, loaded strictly after the store checked the
    file's keys and shapes against it."""

    store: Any
    compute: Compute
    _loaded: dict[tuple[str, str], Network] = field(default_factory=dict)

    def load(self, component: Component) -> Network:
        weight_id, override, key = component.weights, dict(component.config or {}), component.network_key()
        if key not in self._loaded:
            spec = self.store.spec(weight_id)
            config = self.store.config(weight_id, override)
            module = build_arch(spec.arch, config)
            state = self.store.load_state_dict(weight_id, expected=layout_of(module))
            module.load_state_dict(state, strict=True)
            module = module.eval().requires_grad_(False).to(self.compute.device)
            if self.compute.channels_last:
                module = module.to(memory_format=torch.channels_last)
            arch = architecture(spec.arch)
            size = arch.input_size(config)
            self._loaded[key] = Network(weight_id, config, module, self.compute, size, arch.output(config),
                                        arch.condition_channels(config), self._compiled(module, size))
        return self._loaded[key]

    def _compiled(self, module: nn.Module, size: int | None):
        """With --compile, networks of a fixed input size (the restoration networks, whose batches are padded to one
        shape) are compiled for that shape; CUDA graphs replay them on a GPU. The detector (any image size) is not."""
        if not self.compute.compile or size is None:
            return None
        mode = "reduce-overhead" if self.compute.device.type == "cuda" else None
        return torch.compile(module, dynamic=False, mode=mode)
