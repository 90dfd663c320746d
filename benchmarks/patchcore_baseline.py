"""PatchCore with a WideResNet-50 backbone, run the way its authors run it (torch eager, fp32): the
baseline every latency figure is quoted against.

WideResNet-50-2 is defined here (torchvision has no CPU build for this torch);
its weights are random, which changes nothing about its speed. Features are
PatchCore's: layer2 and layer3, 3x3 local mean, layer3 upsampled to layer2's
grid, each projected to 1024 dims by adaptive average pooling and averaged;
scoring is the nearest-neighbour distance to a memory bank, upsampled and
smoothed, as in PatchCore's reference code.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

WIDTH = 2  # WideResNet-50-2: bottleneck width doubled


class Bottleneck(nn.Module):
    def __init__(self, inplanes: int, planes: int, stride: int, downsample: nn.Module | None) -> None:
        super().__init__()
        width = planes * WIDTH
        self.conv1, self.bn1 = nn.Conv2d(inplanes, width, 1, bias=False), nn.BatchNorm2d(width)
        self.conv2, self.bn2 = nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width)
        self.conv3, self.bn3 = nn.Conv2d(width, planes * 4, 1, bias=False), nn.BatchNorm2d(planes * 4)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        return F.relu(self.bn3(self.conv3(y)) + identity)


def _layer(inplanes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
    down = nn.Sequential(nn.Conv2d(inplanes, planes * 4, 1, stride, bias=False), nn.BatchNorm2d(planes * 4))
    layers = [Bottleneck(inplanes, planes, stride, down)]
    layers += [Bottleneck(planes * 4, planes, 1, None) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class WideResNet50Features(nn.Module):
    """Stem, layer1..layer3 of WideResNet-50-2 (layer4 is never used by PatchCore)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1)
        )
        self.layer1 = _layer(64, 64, 3, 1)
        self.layer2 = _layer(256, 128, 4, 2)
        self.layer3 = _layer(512, 256, 6, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        l2 = self.layer2(self.layer1(self.stem(x)))
        return l2, self.layer3(l2)


class PatchCoreBaseline(nn.Module):
    """Image ``[B x 3 x S x S]`` + bank ``[M x 1024]`` -> (anomaly map ``[B x S x S]``, score ``[B]``)."""

    def __init__(self, image_size: int, dim: int = 1024) -> None:
        super().__init__()
        self.backbone = WideResNet50Features().eval()
        self.image_size, self.dim = image_size, dim
        k = torch.exp(-(torch.arange(-16, 17, dtype=torch.float32) ** 2) / 32.0)
        self.register_buffer("kernel", (k / k.sum()).view(1, 1, 1, -1))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        l2, l3 = self.backbone(x)
        l2 = F.avg_pool2d(l2, 3, 1, 1)
        l3 = F.interpolate(F.avg_pool2d(l3, 3, 1, 1), size=l2.shape[-2:], mode="bilinear", align_corners=False)
        per_layer = []
        for f in (l2, l3):
            patches = f.flatten(2).transpose(1, 2)  # [B, N, C]
            per_layer.append(F.adaptive_avg_pool1d(patches, self.dim))
        return torch.stack(per_layer, 0).mean(0)  # [B, N, dim]

    def forward(self, x: torch.Tensor, bank: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.features(x)
        grid = int(feats.shape[1] ** 0.5)
        dist = torch.cdist(feats, bank.unsqueeze(0).expand(feats.shape[0], -1, -1)).min(-1).values
        patch = dist.view(-1, 1, grid, grid)
        pixel = F.interpolate(patch, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        pixel = F.conv2d(F.pad(pixel, (16, 16, 0, 0), mode="reflect"), self.kernel)
        pixel = F.conv2d(F.pad(pixel, (0, 0, 16, 16), mode="reflect"), self.kernel.transpose(2, 3))
        return pixel[:, 0], pixel.flatten(1).amax(1)


def bank_for(image_size: int, shots: int, coreset: float = 0.1, dim: int = 1024) -> torch.Tensor:
    """A random bank of PatchCore's size: 10% coreset of the shots' patches (stride-8 grid)."""
    patches = shots * (image_size // 8) ** 2
    return torch.randn(max(1, int(patches * coreset)), dim)
