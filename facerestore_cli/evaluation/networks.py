"""The networks `eval` measures with, loaded from the weights store (checked files, strict layouts) into the field's
own implementations: lpips.LPIPS, pytorch-fid's InceptionV3, ArcFace IR-SE50, RetinaFace. Nothing is downloaded."""

from __future__ import annotations

import warnings
from unittest import mock

import torch

from facerestore_cli.errors import WeightsError
from facerestore_cli.faces import DETECTOR_WEIGHTS
from facerestore_cli.faces.identity import IDENTITY_WEIGHTS
from facerestore_cli.networks import NetworkLoader
from facerestore_cli.presets import Component

LPIPS_WEIGHTS = {"alex": ("lpips-alexnet", "lpips-alex-linear"), "vgg": ("lpips-vgg16", "lpips-vgg-linear")}
FID_WEIGHTS = "fid-inception"


def weights_for(metrics: list[str], lpips_net: str, detector: str, with_fid: bool) -> list[str]:
    """The weight ids the chosen metrics need."""
    ids = []
    if "lpips" in metrics:
        ids += LPIPS_WEIGHTS[lpips_net]
    if {"ids", "deg", "ids-in"} & set(metrics):
        ids.append(IDENTITY_WEIGHTS)
    if "lmd" in metrics:
        ids.append(DETECTOR_WEIGHTS[detector])
    if with_fid:
        ids.append(FID_WEIGHTS)
    return ids


def lpips_model(loader: NetworkLoader, net: str) -> torch.nn.Module:
    """lpips.LPIPS(net) with its backbone's features and its v0.1 linear layers from the store."""
    import lpips

    backbone_id, linear_id = LPIPS_WEIGHTS[net]
    with warnings.catch_warnings():  # lpips builds its untrained backbone with torchvision's deprecated `pretrained`
        warnings.simplefilter("ignore", UserWarning)
        model = lpips.LPIPS(pretrained=False, net=net, pnet_rand=True, verbose=False)
    features = loader.load(Component(backbone_id)).module.features.state_dict()
    sliced = {}
    for key in model.net.state_dict():  # lpips keeps torchvision's layer numbers: slice<k>.<i>.<p> ↔ features.<i>.<p>
        _slice, index, name = key.split(".", 2)
        sliced[key] = features[f"{index}.{name}"]
    model.net.load_state_dict(sliced, strict=True)
    linear = loader.load(Component(linear_id)).module.state_dict()
    model.lins.load_state_dict({key.replace("lin", "", 1): value for key, value in linear.items()}, strict=True)
    return model.eval().requires_grad_(False).to(loader.compute.device)


def fid_model(loader: NetworkLoader) -> torch.nn.Module:
    """pytorch-fid's InceptionV3 (pool3, 2048 features), its FID weights handed over from the store instead of the
    download its constructor would make."""
    from pytorch_fid import inception

    state = loader.store.load_state_dict(FID_WEIGHTS, config_override={})
    with mock.patch.object(inception, "load_state_dict_from_url", return_value=state):
        model = inception.InceptionV3([inception.InceptionV3.BLOCK_INDEX_BY_DIM[2048]])
    return model.eval().requires_grad_(False).to(loader.compute.device)


def require(store, ids: list[str]) -> None:
    """Every metric network is in the cache, or one WeightsError naming each (exit 4), before any work."""
    try:
        store.require(ids)
    except WeightsError as exc:
        exc.hint = f"{exc.hint} (eval never downloads)" if exc.hint else "eval never downloads: facerestore weights fetch ID"
        raise
