"""RetinaFace (Deng et al. 2020) as facexlib builds it, with facexlib's state-dict layout, without torchvision.

facexlib's ``RetinaFace`` wraps its backbone in torchvision's ``IntermediateLayerGetter`` (and builds the ResNet-50
body with ``torchvision.models``); importing torchvision pulls in ``torch._dynamo`` — over a second of every run's
start-up. The FPN, SSH and head modules are facexlib's own (they import only torch); the ResNet-50 body here is
torchvision's v1.5 layout (stride on the 3×3 convolution), layer for layer, so official checkpoints load strictly.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

import facerestore_cli.compat  # noqa: F401  (must precede any facexlib import)
from facexlib.detection.retinaface_net import FPN, SSH, MobileNetV1, make_bbox_head, make_class_head, make_landmark_head

from facerestore_cli.archs import DETECTIONS, register_arch

RETINAFACE_NETWORKS = ("mobile0.25", "resnet50")
_COMMON = {"min_sizes": [[16, 32], [64, 128], [256, 512]], "steps": [8, 16, 32], "variance": [0.1, 0.2], "clip": False}
CONFIGS = {  # facexlib's generate_config, the keys detection uses
    "mobile0.25": {"name": "mobilenet0.25", "return_layers": ["stage1", "stage2", "stage3"], "in_channel": 32,
                   "out_channel": 64, **_COMMON},
    "resnet50": {"name": "Resnet50", "return_layers": ["layer2", "layer3", "layer4"], "in_channel": 256,
                 "out_channel": 256, **_COMMON},
}


class Bottleneck(nn.Module):
    """torchvision's ResNet bottleneck: 1×1 → 3×3 (stride) → 1×1 ×4, with a projected shortcut where shapes change."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample = None
        if stride != 1 or inplanes != planes * 4:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes * 4, 1, stride, bias=False),
                                            nn.BatchNorm2d(planes * 4))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(out + shortcut)


class ResNet50Body(nn.Module):
    """torchvision's resnet50 up to layer4 (what IntermediateLayerGetter keeps); returns layer2..layer4 features."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        inplanes = 64
        for index, (planes, blocks, stride) in enumerate([(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)], 1):
            layer = [Bottleneck(inplanes, planes, stride)] + [Bottleneck(planes * 4, planes) for _ in range(blocks - 1)]
            setattr(self, f"layer{index}", nn.Sequential(*layer))
            inplanes = planes * 4

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c2 = self.layer2(self.layer1(x))
        c3 = self.layer3(c2)
        return [c2, c3, self.layer4(c3)]


class MobileNetBody(nn.Module):
    """facexlib's MobileNetV1 stages 1–3 (its avg/fc head is dropped, as IntermediateLayerGetter does)."""

    def __init__(self):
        super().__init__()
        full = MobileNetV1()
        self.stage1, self.stage2, self.stage3 = full.stage1, full.stage2, full.stage3

    def forward(self, x):
        s1 = self.stage1(x)
        s2 = self.stage2(s1)
        return [s1, s2, self.stage3(s2)]


class RetinaFace(nn.Module):
    """The test-phase network: BGR-minus-mean image → (box offsets, class softmax, landmark offsets) per anchor."""

    def __init__(self, network: str = "resnet50"):
        super().__init__()
        if network not in RETINAFACE_NETWORKS:
            raise ValueError(f"unknown RetinaFace network {network!r}; expected one of {RETINAFACE_NETWORKS}")
        self.cfg = CONFIGS[network]
        self.body = ResNet50Body() if network == "resnet50" else MobileNetBody()
        stage = self.cfg["in_channel"]
        out = self.cfg["out_channel"]
        self.fpn = FPN([stage * 2, stage * 4, stage * 8], out)
        self.ssh1, self.ssh2, self.ssh3 = SSH(out, out), SSH(out, out), SSH(out, out)
        self.ClassHead = make_class_head(fpn_num=3, inchannels=out)
        self.BboxHead = make_bbox_head(fpn_num=3, inchannels=out)
        self.LandmarkHead = make_landmark_head(fpn_num=3, inchannels=out)

    def forward(self, inputs):
        fpn = self.fpn(self.body(inputs))
        features = [self.ssh1(fpn[0]), self.ssh2(fpn[1]), self.ssh3(fpn[2])]
        boxes = torch.cat([head(f) for head, f in zip(self.BboxHead, features)], dim=1)
        classes = torch.cat([head(f) for head, f in zip(self.ClassHead, features)], dim=1)
        landmarks = torch.cat([head(f) for head, f in zip(self.LandmarkHead, features)], dim=1)
        return boxes, F.softmax(classes, dim=-1), landmarks


@register_arch("retinaface", input_size=lambda c: None, output=DETECTIONS)
def build_retinaface(config: Mapping[str, Any] | None = None) -> nn.Module:
    """RetinaFace on the CPU in eval mode; ``config["network"]`` is "mobile0.25" or "resnet50" (default)."""
    return RetinaFace((config or {}).get("network", "resnet50")).eval()
