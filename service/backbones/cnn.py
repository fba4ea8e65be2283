"""ImageNet CNN architectures in plain torch (torchvision cannot be installed beside this torch).

Each network keeps the parameter names of the checkpoint it loads, so its state dict loads with
every key matching (``strict=True``). ``pooled(x)`` returns the global-average-pooled
penultimate activations (the features Graft serves); ``forward(x)`` returns the ImageNet logits,
used to check that weights and preprocessing are right.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


class CNN(nn.Module):
    """What every architecture here provides."""

    dim: int
    map_channels: int  # channels of maps()
    coarse_channels: int  # the last of them: the stride-16 activations (detection's pooled embedding reads these)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:  # (n, 3, h, w) normalised → (n, dim)
        raise NotImplementedError

    def logits(self, pooled: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def maps(self, x: torch.Tensor) -> torch.Tensor:
        """Multi-scale feature maps for detection heads: the stride-8 activations average-pooled to stride 16,
        concatenated with the stride-16 ones, (n, map_channels, h / 16, w / 16)."""
        fine, coarse = self.strided(x)
        return torch.cat([F.avg_pool2d(fine, 2), coarse], dim=1)

    def strided(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The last activations at stride 8 and at stride 16."""
        fine = self.stride8(x)
        coarse = fine
        for block in self.coarse_blocks():
            coarse = block(coarse)
        return fine, coarse

    def stride8(self, x: torch.Tensor) -> torch.Tensor:
        """The last activations at stride 8 (the fine map)."""
        raise NotImplementedError

    def coarse_blocks(self) -> list[nn.Module]:
        """The blocks from the stride-8 activations to the last stride-16 ones, in order."""
        raise NotImplementedError

    # -- the split used by fine-tuned detection heads (adapters/heads/detection.py TunedDetectorHead) -----

    fine_channels: int  # channels of the stride-8 map (the first channels of maps() and of lower())

    def top_blocks(self, k: int) -> nn.Sequential:
        """The last ``k`` stride-16 blocks (the ones a fine-tuned detection head trains its own copies of)."""
        blocks = self.coarse_blocks()
        if not 1 <= k < len(blocks):
            raise ValueError(f"k must be between 1 and {len(blocks) - 1} (stride-16 blocks of this CNN)")
        return nn.Sequential(*blocks[len(blocks) - k :])

    def lower(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """What stays frozen below the top ``k`` stride-16 blocks: the stride-8 map average-pooled to stride 16,
        concatenated with the activations entering those blocks, (n, fine_channels + c, h / 16, w / 16).
        ``maps(x)`` equals the first ``fine_channels`` channels beside ``top_blocks(k)`` of the rest."""
        blocks = self.coarse_blocks()
        if not 1 <= k < len(blocks):
            raise ValueError(f"k must be between 1 and {len(blocks) - 1} (stride-16 blocks of this CNN)")
        fine = self.stride8(x)
        mid = fine
        for block in blocks[: len(blocks) - k]:
            mid = block(mid)
        return torch.cat([F.avg_pool2d(fine, 2), mid], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(self.pooled(x))


# -- MobileNetV2, torchvision's layout (features.N..., classifier.1) --------------------------


class _ConvBNReLU6(nn.Sequential):
    def __init__(self, inp: int, out: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> None:
        super().__init__(
            nn.Conv2d(inp, out, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(out),
            nn.ReLU6(inplace=True),
        )


class _InvertedResidual(nn.Module):
    def __init__(self, inp: int, out: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = inp * expand
        self.residual = stride == 1 and inp == out
        layers: list[nn.Module] = [_ConvBNReLU6(inp, hidden, kernel=1)] if expand != 1 else []
        layers += [
            _ConvBNReLU6(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, out, 1, bias=False),
            nn.BatchNorm2d(out),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.residual else self.conv(x)


class MobileNetV2(CNN):
    """MobileNetV2, width 1.0 (Sandler et al. 2018)."""

    # expand ratio, output channels, repeats, stride of the first repeat
    BLOCKS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
    dim = 1280

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        layers: list[nn.Module] = [_ConvBNReLU6(3, 32, stride=2)]
        inp = 32
        for expand, out, repeats, stride in self.BLOCKS:
            for i in range(repeats):
                layers.append(_InvertedResidual(inp, out, stride if i == 0 else 1, expand))
                inp = out
        layers.append(_ConvBNReLU6(inp, self.dim, kernel=1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(self.dim, num_classes))

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).mean(dim=(2, 3))

    map_channels = 32 + 96
    coarse_channels = 96
    fine_channels = 32

    def stride8(self, x: torch.Tensor) -> torch.Tensor:
        return self.features[:7](x)  # type: ignore[no-any-return]  # through the 32-channel blocks, stride 8

    def coarse_blocks(self) -> list[nn.Module]:
        return [self.features[i] for i in range(7, 14)]  # the 64- and 96-channel blocks, stride 16

    def logits(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.classifier(pooled)


# -- EfficientNet-Lite0, the layout of lukemelas' EfficientNet-PyTorch (_conv_stem, _blocks.N...) --


class _SameConv(nn.Conv2d):
    """A bias-free convolution with TensorFlow's 'SAME' padding (extra pixel at the bottom/right)."""

    def __init__(self, inp: int, out: int, kernel: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__(inp, out, kernel, stride, padding=0, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads: list[int] = []
        for size, k, s in zip(reversed(x.shape[-2:]), reversed(self.kernel_size), reversed(self.stride), strict=True):
            total = max((math.ceil(int(size) / s) - 1) * s + k - int(size), 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads) if any(pads) else x)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=1e-3)


class _MBConv(nn.Module):
    def __init__(self, inp: int, out: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = inp * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = _SameConv(inp, hidden, 1)
            self._bn0 = _bn(hidden)
        self._depthwise_conv = _SameConv(hidden, hidden, kernel, stride, groups=hidden)
        self._bn1 = _bn(hidden)
        self._project_conv = _SameConv(hidden, out, 1)
        self._bn2 = _bn(out)
        self.residual = stride == 1 and inp == out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.residual else y


class EfficientNetLite0(CNN):
    """EfficientNet-Lite0 (no squeeze-excitation, ReLU6, fixed stem and head; Tan & Le 2019)."""

    # repeats, kernel, stride, expand, input channels, output channels
    BLOCKS = (
        (1, 3, 1, 1, 32, 16),
        (2, 3, 2, 6, 16, 24),
        (2, 5, 2, 6, 24, 40),
        (3, 3, 2, 6, 40, 80),
        (3, 5, 1, 6, 80, 112),
        (4, 5, 2, 6, 112, 192),
        (1, 3, 1, 6, 192, 320),
    )
    dim = 1280

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self._conv_stem = _SameConv(3, 32, 3, 2)
        self._bn0 = _bn(32)
        blocks: list[nn.Module] = []
        for repeats, kernel, stride, expand, inp, out in self.BLOCKS:
            for i in range(repeats):
                blocks.append(_MBConv(inp if i == 0 else out, out, kernel, stride if i == 0 else 1, expand))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = _SameConv(320, self.dim, 1)
        self._bn1 = _bn(self.dim)
        self._fc = nn.Linear(self.dim, num_classes)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return F.relu6(self._bn1(self._conv_head(x))).mean(dim=(2, 3))

    map_channels = 40 + 112
    coarse_channels = 112
    fine_channels = 40

    def stride8(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks[:5]:  # through the 40-channel blocks, stride 8
            x = block(x)
        return x

    def coarse_blocks(self) -> list[nn.Module]:
        return list(self._blocks[5:11])  # the 80- and 112-channel blocks, stride 16

    def logits(self, pooled: torch.Tensor) -> torch.Tensor:
        return self._fc(pooled)
