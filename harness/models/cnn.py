"""A small three-block CNN: the embedded default's model (digits, MNIST), fast on two cores."""

from torch import nn

from harness.models.base import BlockInfo, BlockModel, NormLayer, register_model, scaled

CNN_CHANNELS = (32, 64, 128)


def conv_block(cin: int, cout: int, norm_layer: NormLayer, pool: bool) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        norm_layer(cout),
        nn.ReLU(inplace=True),
    ]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


@register_model("cnn")
def cnn(num_classes: int, in_channels: int, width: float, norm_layer: NormLayer) -> BlockModel:
    channels = [scaled(c, width) for c in CNN_CHANNELS]
    blocks, info, cin = [], [], in_channels
    for i, cout in enumerate(channels):
        pool = i > 0  # keep 8x8 digits at 8 -> 8 -> 4 -> 2
        blocks.append(conv_block(cin, cout, norm_layer, pool))
        info.append(BlockInfo(cin, cout, 2 if pool else 1))
        cin = cout
    return BlockModel(blocks, info, num_classes, width)
