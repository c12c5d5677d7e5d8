"""Builders for the facexlib networks of the shared face pipeline: ParseNet and ArcFace (RetinaFace is in
``retinaface.py``, without torchvision).

They return untrained modules on the CPU, in eval mode; the caller loads a state dict with ``strict=True``.
facexlib's own ``init_*`` helpers are not used: they download into site-packages and load without
``weights_only``.
"""

from __future__ import annotations

from typing import Any, Mapping

from torch import nn

import facerestore_cli.compat  # noqa: F401  (must precede any facexlib import)
from facerestore_cli.archs import EMBEDDING, PARSING, register_arch


@register_arch("parsenet", input_size=lambda c: c.get("in_size", 512), output=PARSING)
def build_parsenet(config: Mapping[str, Any] | None = None) -> nn.Module:
    """facexlib ParseNet as used for paste-back masks: 512 in, 512 out, 19 parsing classes."""
    from facexlib.parsing.parsenet import ParseNet

    cfg = {"in_size": 512, "out_size": 512, "parsing_ch": 19}
    cfg.update(config or {})
    return ParseNet(**cfg).eval()


@register_arch("arcface", input_size=lambda c: 112, output=EMBEDDING)
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
