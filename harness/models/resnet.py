"""CIFAR-style ResNets (He et al. 2016; 3x3 stem, no max-pool), as four blocks: stem+layer1..layer4."""

import torch
from torch import nn

from harness.models.base import BlockInfo, BlockModel, NormLayer, register_model, scaled


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual; the shortcut is registered first so that
    ``conv2``/``bn2`` are the last convolution and norm of the unit in module order."""

    def __init__(self, cin: int, cout: int, stride: int, norm_layer: NormLayer) -> None:
        super().__init__()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), norm_layer(cout)
            )
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = norm_layer(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = norm_layer(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


def resnet(
    units: tuple[int, int, int, int], num_classes: int, in_channels: int, width: float,
    norm_layer: NormLayer,
) -> BlockModel:
    widths = [scaled(c, width) for c in (64, 128, 256, 512)]
    blocks: list[nn.Module] = []
    info: list[BlockInfo] = []
    cin = widths[0]
    for stage, (cout, n) in enumerate(zip(widths, units)):
        stride = 1 if stage == 0 else 2
        layer: list[nn.Module] = []
        if stage == 0:
            layer += [nn.Conv2d(in_channels, cin, 3, padding=1, bias=False), norm_layer(cin), nn.ReLU()]
        block_in = in_channels if stage == 0 else cin
        for i in range(n):
            layer.append(BasicBlock(cin, cout, stride if i == 0 else 1, norm_layer))
            cin = cout
        blocks.append(nn.Sequential(*layer))
        info.append(BlockInfo(block_in, cout, stride))
    return BlockModel(blocks, info, num_classes, width)


@register_model("resnet18")
def resnet18(num_classes: int, in_channels: int, width: float, norm_layer: NormLayer) -> BlockModel:
    return resnet((2, 2, 2, 2), num_classes, in_channels, width, norm_layer)


@register_model("resnet34")
def resnet34(num_classes: int, in_channels: int, width: float, norm_layer: NormLayer) -> BlockModel:
    return resnet((3, 4, 6, 3), num_classes, in_channels, width, norm_layer)
