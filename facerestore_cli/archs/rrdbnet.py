"""Real-ESRGAN's generator (Wang et al., ICCVW 2021): basicsr's RRDBNet, as the Real-ESRGAN releases load it.

At scale 2 (and 1) RRDBNet pixel-unshuffles its input first, so it takes images whose sides are even (a multiple of
4 at scale 1); ``facerestore_cli.background`` pads them as Real-ESRGAN's inference helper does.
"""

from __future__ import annotations

from typing import Any, Mapping

from torch import nn

import facerestore_cli.compat  # noqa: F401  (must precede any basicsr import)
from facerestore_cli.archs import IMAGE, register_arch

REALESRGAN_CONFIG = {"num_in_ch": 3, "num_out_ch": 3, "num_feat": 64, "num_block": 23, "num_grow_ch": 32, "scale": 4}


@register_arch("rrdbnet", input_size=lambda c: None, output=IMAGE)
def build_rrdbnet(config: Mapping[str, Any] | None = None) -> nn.Module:
    """RRDBNet on the CPU in eval mode; RGB in [0, 1] in, `scale` times larger out."""
    from basicsr.archs.rrdbnet_arch import RRDBNet

    return RRDBNet(**{**REALESRGAN_CONFIG, **(config or {})}).eval()
