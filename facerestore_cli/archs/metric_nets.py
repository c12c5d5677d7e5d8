"""The networks of `facerestore eval`, as the field's own packages build them: torchvision's AlexNet and VGG-16 (the
LPIPS backbones), LPIPS's linear layers (the lpips package), and pytorch-fid's FID InceptionV3. Each is built
unloaded here; its weights come from the store, checked against the built layout (networks.py)."""

from __future__ import annotations

import warnings
from typing import Any, Mapping
from unittest import mock

from torch import nn

from facerestore_cli.archs import EMBEDDING, IMAGE, register_arch

LPIPS_NETS = ("alex", "vgg")


@register_arch("tv_alexnet", input_size=lambda c: None, output=EMBEDDING)
def build_alexnet(config: Mapping[str, Any]) -> nn.Module:
    from torchvision.models import alexnet

    return alexnet(weights=None, num_classes=config["num_classes"])


@register_arch("tv_vgg16", input_size=lambda c: None, output=EMBEDDING)
def build_vgg16(config: Mapping[str, Any]) -> nn.Module:
    from torchvision.models import vgg16

    return vgg16(weights=None, num_classes=config["num_classes"])


class LpipsLinear(nn.Module):
    """LPIPS's linear layers alone (lin0 … lin4, 1×1 convolutions after dropout), keyed as its weight files are."""

    def __init__(self, net: str):
        super().__init__()
        import lpips

        with warnings.catch_warnings():  # lpips builds its backbone with torchvision's deprecated `pretrained`
            warnings.simplefilter("ignore", UserWarning)
            full = lpips.LPIPS(pretrained=False, net=net, pnet_rand=True, verbose=False)
        for index, layer in enumerate(full.lins):
            self.add_module(f"lin{index}", layer)


@register_arch("lpips_linear", input_size=lambda c: None, output=IMAGE)
def build_lpips_linear(config: Mapping[str, Any]) -> nn.Module:
    if config["net"] not in LPIPS_NETS:
        raise ValueError(f"net must be one of {', '.join(LPIPS_NETS)}, not {config['net']!r}")
    return LpipsLinear(config["net"])


@register_arch("fid_inception", input_size=lambda c: 299, output=EMBEDDING)
def build_fid_inception(config: Mapping[str, Any]) -> nn.Module:
    """pytorch-fid's `fid_inception_v3()` network, its own blocks, without the download it would load into it."""
    from pytorch_fid import inception
    from torchvision.models.inception import Inception3

    with mock.patch.object(inception, "load_state_dict_from_url", return_value=None), \
            mock.patch.object(Inception3, "load_state_dict", return_value=None):
        return inception.fid_inception_v3()
