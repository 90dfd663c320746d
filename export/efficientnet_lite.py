"""EfficientNet-Lite defined in-project, so the build host needs neither timm nor torchvision.

The architecture is read off the checkpoint itself (kernel size, width and block
count of every stage), so one definition serves Lite0, Lite1 and Lite2. Padding
follows TensorFlow's "same" rule, which is how these ImageNet weights were
trained; for inputs whose side is a multiple of 16 that padding is static, which
keeps the ONNX graph free of shape arithmetic.

Checkpoint keys follow the EfficientNet-PyTorch naming (``_conv_stem``,
``_blocks.N._depthwise_conv`` ...), which the module mirrors so that
``load_state_dict(strict=True)`` needs no key map.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

BN_EPS = 1e-3  # TensorFlow's default, the value these weights were trained with
STAGE_STRIDES = (1, 2, 2, 2, 1, 2, 1)  # EfficientNet's seven stages


@dataclass(frozen=True)
class BlockSpec:
    """One MBConv block: ``in_ch -> in_ch*expand -> out_ch`` with a ``kernel`` depthwise conv."""

    in_ch: int
    out_ch: int
    kernel: int
    stride: int
    expand: int
    stage: int


def _same_pad(kernel: int, stride: int) -> tuple[int, int, int, int]:
    """TF 'same' padding for an even-sized input: (left, right, top, bottom)."""
    total = max(kernel - stride, 0)
    before = total // 2
    return (before, total - before, before, total - before)


class MBConv(nn.Module):
    """Inverted residual block of EfficientNet-Lite (no squeeze-excite, ReLU6)."""

    def __init__(self, spec: BlockSpec) -> None:
        super().__init__()
        mid = spec.in_ch * spec.expand
        self.spec = spec
        self._expand_conv = nn.Conv2d(spec.in_ch, mid, 1, bias=False) if spec.expand != 1 else None
        self._bn0 = nn.BatchNorm2d(mid, eps=BN_EPS) if spec.expand != 1 else None
        self._depthwise_conv = nn.Conv2d(mid, mid, spec.kernel, spec.stride, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._project_conv = nn.Conv2d(mid, spec.out_ch, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(spec.out_ch, eps=BN_EPS)
        self.pad = _same_pad(spec.kernel, spec.stride)
        self.residual = spec.stride == 1 and spec.in_ch == spec.out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self._expand_conv is not None:
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(F.pad(y, self.pad))))
        y = self._bn2(self._project_conv(y))
        return x + y if self.residual else y


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite backbone; ``stage_outputs`` gives the feature map after each stage.

    ``classify`` runs the full ImageNet head: it exists to prove that the loaded
    weights are the real ones (a test checks that coffee is called espresso).
    """

    def __init__(self, blocks: list[BlockSpec], head_in: int, head_out: int, classes: int) -> None:
        super().__init__()
        self._conv_stem = nn.Conv2d(3, blocks[0].in_ch, 3, 2, bias=False)
        self._bn0 = nn.BatchNorm2d(blocks[0].in_ch, eps=BN_EPS)
        self._blocks = nn.ModuleList(MBConv(spec) for spec in blocks)
        self._conv_head = nn.Conv2d(head_in, head_out, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(head_out, eps=BN_EPS)
        self._fc = nn.Linear(head_out, classes)
        self.stage_channels = [max(b.out_ch for b in blocks if b.stage == s) for s in range(len(STAGE_STRIDES))]

    def stage_outputs(self, x: torch.Tensor, last_stage: int) -> list[torch.Tensor]:
        """Feature maps after stages ``0..last_stage``; stage s has stride ``strides()[s]``."""
        x = F.relu6(self._bn0(self._conv_stem(F.pad(x, _same_pad(3, 2)))))
        outputs: list[torch.Tensor] = []
        for i, block in enumerate(self._blocks):
            x = block(x)
            last_of_stage = i + 1 == len(self._blocks) or self._blocks[i + 1].spec.stage != block.spec.stage
            if last_of_stage:
                outputs.append(x)
                if block.spec.stage == last_stage:
                    break
        return outputs

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits ``[B x classes]``."""
        x = self.stage_outputs(x, len(STAGE_STRIDES) - 1)[-1]
        x = F.relu6(self._bn1(self._conv_head(x)))
        return self._fc(x.mean(dim=(2, 3)))

    @staticmethod
    def strides() -> list[int]:
        """Cumulative stride of each stage's output (2 from the stem)."""
        out, s = [], 2
        for step in STAGE_STRIDES:
            s *= step
            out.append(s)
        return out


def blocks_from_state_dict(state: dict[str, torch.Tensor]) -> list[BlockSpec]:
    """Recover the block layout from tensor shapes: a stage is a run of blocks of one width."""
    count = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("_blocks."))
    widths = [state[f"_blocks.{i}._project_conv.weight"].shape[0] for i in range(count)]
    stage_of_width: dict[int, int] = {}
    for w in widths:
        stage_of_width.setdefault(w, len(stage_of_width))
    if len(stage_of_width) != len(STAGE_STRIDES):
        raise ValueError(f"checkpoint has {len(stage_of_width)} stages, EfficientNet-Lite has 7")
    blocks, in_ch, prev_stage = [], state["_conv_stem.weight"].shape[0], -1
    for i, out_ch in enumerate(widths):
        stage = stage_of_width[out_ch]
        dw = state[f"_blocks.{i}._depthwise_conv.weight"]
        expand = dw.shape[0] // in_ch
        stride = STAGE_STRIDES[stage] if stage != prev_stage else 1
        blocks.append(BlockSpec(in_ch, out_ch, dw.shape[-1], stride, expand, stage))
        in_ch, prev_stage = out_ch, stage
    return blocks


def load_efficientnet_lite(checkpoint: Path) -> EfficientNetLite:
    """Build the network that fits ``checkpoint`` and load it strictly, in eval mode."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    blocks = blocks_from_state_dict(state)
    head = state["_conv_head.weight"]
    model = EfficientNetLite(blocks, head.shape[1], head.shape[0], state["_fc.weight"].shape[0])
    model.load_state_dict(state, strict=True)
    return model.eval()
