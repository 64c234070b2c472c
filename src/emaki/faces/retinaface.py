"""RetinaFace with a ResNet-50 body (Deng et al. 2019, "RetinaFace: Single-stage Dense Face
Localisation in the Wild"), laid out as facexlib's `retinaface_resnet50` so that its weights file
(`detection_Resnet50_Final.pth`, which A1111 keeps in `models/GFPGAN`) loads key for key.

    body (torchvision's ResNet-50 up to layer4: strides 8, 16, 32)
      → fpn (1×1 lateral convs to 256, nearest upsampling, 3×3 merge)
      → ssh1..3 (3×3 ‖ 5×5 ‖ 7×7 context branches as stacked 3×3 convs, 128+64+64 channels, ReLU)
      → ClassHead / BboxHead / LandmarkHead (1×1 convs, 2 anchors per cell: 2, 4 and 10 numbers each)

The network takes a BGR image minus the mean (104, 117, 123), in 0-255, as the Caffe-trained
original did; `emaki.faces.detection` does that and decodes the outputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

FPN_CHANNELS = 256
ANCHORS_PER_CELL = 2


def _conv_bn(inputs: int, outputs: int, kernel: int, *, relu: bool) -> nn.Sequential:
    """Conv (no bias) → BatchNorm [→ ReLU]; facexlib's `conv_bn`, `conv_bn1X1`, `conv_bn_no_relu`
    (their leaky slope is 0 at 256 channels, so the activation is a plain ReLU)."""
    layers: list[nn.Module] = [nn.Conv2d(inputs, outputs, kernel, 1, kernel // 2, bias=False), nn.BatchNorm2d(outputs)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class Bottleneck(nn.Module):
    """torchvision's ResNet-50 bottleneck (stride on the 3×3 conv, "ResNet v1.5")."""

    def __init__(self, inputs: int, width: int, stride: int) -> None:
        super().__init__()
        outputs = width * 4
        self.conv1 = nn.Conv2d(inputs, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, outputs, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(outputs)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or inputs != outputs:
            self.downsample = nn.Sequential(nn.Conv2d(inputs, outputs, 1, stride, bias=False), nn.BatchNorm2d(outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


class ResNet50Body(nn.Module):
    """ResNet-50 without its pooling and classifier; returns layer2, layer3 and layer4."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        inputs = 64
        for index, (width, blocks, stride) in enumerate([(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)], 1):
            layer = [Bottleneck(inputs, width, stride)] + [Bottleneck(width * 4, width, 1) for _ in range(blocks - 1)]
            setattr(self, f"layer{index}", nn.Sequential(*layer))
            inputs = width * 4

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c2 = self.layer1(x)
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        return [c3, c4, self.layer4(c4)]


class FeaturePyramid(nn.Module):
    """Top-down pathway: P5 → upsample + lateral → merge, down to stride 8."""

    def __init__(self, inputs: tuple[int, int, int], channels: int) -> None:
        super().__init__()
        self.output1 = _conv_bn(inputs[0], channels, 1, relu=True)
        self.output2 = _conv_bn(inputs[1], channels, 1, relu=True)
        self.output3 = _conv_bn(inputs[2], channels, 1, relu=True)
        self.merge1 = _conv_bn(channels, channels, 3, relu=True)
        self.merge2 = _conv_bn(channels, channels, 3, relu=True)

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        out1, out2, out3 = self.output1(features[0]), self.output2(features[1]), self.output3(features[2])
        out2 = self.merge2(out2 + F.interpolate(out3, size=out2.shape[2:], mode="nearest"))
        out1 = self.merge1(out1 + F.interpolate(out2, size=out1.shape[2:], mode="nearest"))
        return [out1, out2, out3]


class ContextModule(nn.Module):
    """SSH context module (Najibi et al. 2017): 3×3, 5×5 and 7×7 receptive fields side by side."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv3X3 = _conv_bn(channels, channels // 2, 3, relu=False)
        self.conv5X5_1 = _conv_bn(channels, channels // 4, 3, relu=True)
        self.conv5X5_2 = _conv_bn(channels // 4, channels // 4, 3, relu=False)
        self.conv7X7_2 = _conv_bn(channels // 4, channels // 4, 3, relu=True)
        self.conv7x7_3 = _conv_bn(channels // 4, channels // 4, 3, relu=False)  # sic: facexlib's lower-case x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch5 = self.conv5X5_1(x)
        branch7 = self.conv7x7_3(self.conv7X7_2(branch5))
        return F.relu(torch.cat([self.conv3X3(x), self.conv5X5_2(branch5), branch7], dim=1))


class _Head(nn.Module):
    """A 1×1 conv giving `values` numbers per anchor, flattened to (batch, cells·anchors, values)."""

    def __init__(self, channels: int, values: int) -> None:
        super().__init__()
        self.values = values
        self.conv1x1 = nn.Conv2d(channels, ANCHORS_PER_CELL * values, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1x1(x).permute(0, 2, 3, 1)
        return out.reshape(out.shape[0], -1, self.values)


class RetinaFace(nn.Module):
    """The detector network: (B, 3, H, W) mean-subtracted BGR → box offsets (B, N, 4), face
    probabilities (B, N, 2: background, face) and landmark offsets (B, N, 10) per prior box."""

    def __init__(self) -> None:
        super().__init__()
        self.body = ResNet50Body()
        self.fpn = FeaturePyramid((512, 1024, 2048), FPN_CHANNELS)
        self.ssh1 = ContextModule(FPN_CHANNELS)
        self.ssh2 = ContextModule(FPN_CHANNELS)
        self.ssh3 = ContextModule(FPN_CHANNELS)
        self.ClassHead = nn.ModuleList([_Head(FPN_CHANNELS, 2) for _ in range(3)])
        self.BboxHead = nn.ModuleList([_Head(FPN_CHANNELS, 4) for _ in range(3)])
        self.LandmarkHead = nn.ModuleList([_Head(FPN_CHANNELS, 10) for _ in range(3)])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        pyramid = self.fpn(self.body(x))
        features = [self.ssh1(pyramid[0]), self.ssh2(pyramid[1]), self.ssh3(pyramid[2])]
        boxes = torch.cat([head(f) for head, f in zip(self.BboxHead, features, strict=True)], dim=1)
        classes = torch.cat([head(f) for head, f in zip(self.ClassHead, features, strict=True)], dim=1)
        landmarks = torch.cat([head(f) for head, f in zip(self.LandmarkHead, features, strict=True)], dim=1)
        return boxes, F.softmax(classes, dim=-1), landmarks
