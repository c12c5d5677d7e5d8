"""Builders for the facexlib networks of the shared face pipeline (RetinaFace detector, ParseNet, ArcFace).

They return untrained modules on the CPU, in eval mode; the caller loads a state dict with ``strict=True``.
facexlib's own ``init_*`` helpers are not used: they download into site-packages and load without
``weights_only``.
"""

from __future__ import annotations

import warnings
from typing import Any, Mapping

import torch
from torch import nn

RETINAFACE_NETWORKS = ("mobile0.25", "resnet50")


def build_retinaface(config: Mapping[str, Any] | None = None) -> nn.Module:
    """facexlib RetinaFace; ``config["network"]`` is "mobile0.25" or "resnet50" (default)."""
    from facexlib.detection.retinaface import RetinaFace

    network = (config or {}).get("network", "resnet50")
    if network not in RETINAFACE_NETWORKS:
        raise ValueError(f"unknown RetinaFace network {network!r}; expected one of {RETINAFACE_NETWORKS}")
    # RetinaFace moves itself to `device` in __init__ and keeps it in `.device`; build on the CPU and let
    # the caller move it. FaceDetector reads the device from the parameters, not from `.device`.
    with warnings.catch_warnings():
        # facexlib calls torchvision's resnet50(pretrained=False), deprecated but harmless.
        warnings.filterwarnings("ignore", message=".*(pretrained|weights).*deprecated", category=UserWarning)
        model = RetinaFace(network_name=network, half=False, phase="test", device=torch.device("cpu"))
    return model.eval()


def build_parsenet(config: Mapping[str, Any] | None = None) -> nn.Module:
    """facexlib ParseNet as used for paste-back masks: 512 in, 512 out, 19 parsing classes."""
    from facexlib.parsing.parsenet import ParseNet

    cfg = {"in_size": 512, "out_size": 512, "parsing_ch": 19}
    cfg.update(config or {})
    return ParseNet(**cfg).eval()


def build_arcface(config: Mapping[str, Any] | None = None) -> nn.Module:
    """facexlib's ArcFace ``Backbone`` (TreB1eN IR-SE50 by default): 112×112 in, 512-d L2-normalised out.

    Returned in eval mode: its BatchNorm layers then use running statistics (batch-invariant, and the identity
    guidance gets the gradient of the per-sample function) and Dropout(0.6) is off. Preprocessing (crop,
    channel order, range) is in ``facerestore_cli.faces.identity``.
    """
    from facexlib.recognition.arcface_arch import Backbone

    cfg = {"num_layers": 50, "drop_ratio": 0.6, "mode": "ir_se"}
    cfg.update(config or {})
    return Backbone(**cfg).eval()
