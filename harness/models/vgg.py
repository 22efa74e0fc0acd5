"""VGG with BatchNorm (Simonyan & Zisserman 2015), CIFAR-style: one block per pooling stage.

Convolutions keep their bias, as the reference CIFAR implementations do, so parameter counts match
the published ones (VGG-11: 9,231,114; VGG-16: 14,728,266 for ten classes)."""

from torch import nn

from harness.models.base import BlockInfo, BlockModel, NormLayer, register_model, scaled

VGG_STAGES = {
    "vgg11": ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    "vgg16": ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
}


def vgg(name: str, num_classes: int, in_channels: int, width: float, norm_layer: NormLayer) -> BlockModel:
    blocks: list[nn.Module] = []
    info: list[BlockInfo] = []
    cin = in_channels
    for stage in VGG_STAGES[name]:
        block_in = cin
        layers: list[nn.Module] = []
        for c in stage:
            cout = scaled(c, width)
            layers += [nn.Conv2d(cin, cout, 3, padding=1), norm_layer(cout), nn.ReLU(inplace=True)]
            cin = cout
        layers.append(nn.MaxPool2d(2))
        blocks.append(nn.Sequential(*layers))
        info.append(BlockInfo(block_in, cin, 2))
    return BlockModel(blocks, info, num_classes, width)


@register_model("vgg11")
def vgg11(num_classes: int, in_channels: int, width: float, norm_layer: NormLayer) -> BlockModel:
    return vgg("vgg11", num_classes, in_channels, width, norm_layer)


@register_model("vgg16")
def vgg16(num_classes: int, in_channels: int, width: float, norm_layer: NormLayer) -> BlockModel:
    return vgg("vgg16", num_classes, in_channels, width, norm_layer)
