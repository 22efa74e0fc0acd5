"""The zoo: published parameter counts, declared blocks, width twins."""

import pytest
import torch

from harness.models import MODELS, ModelSpec, build_model, scaled

CIFAR = ModelSpec("resnet18", 10, 3, 32)


def params(model) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(("name", "count"), [
    ("resnet18", 11_173_962),  # CIFAR ResNet-18, 10 classes (He et al.; kuangliu/pytorch-cifar)
    ("resnet34", 21_282_122),
    ("vgg11", 9_231_114),
    ("vgg16", 14_728_266),
    ("cnn", 94_762),
])
def test_parameter_counts(name, count):
    assert params(build_model(ModelSpec(name, 10, 3, 32))) == count


def test_cnn_count_by_hand():
    # 1->32, 32->64, 64->128 3x3 convs without bias, BN (2 per channel), linear 128->10
    expected = 9 * (1 * 32 + 32 * 64 + 64 * 128) + 2 * (32 + 64 + 128) + 128 * 10 + 10
    assert params(build_model(ModelSpec("cnn", 10, 1, 8))) == expected


@pytest.mark.parametrize(("name", "blocks", "channels", "strides"), [
    ("resnet18", 4, [64, 128, 256, 512], [1, 2, 2, 2]),
    ("resnet34", 4, [64, 128, 256, 512], [1, 2, 2, 2]),
    ("vgg11", 5, [64, 128, 256, 512, 512], [2, 2, 2, 2, 2]),
    ("vgg16", 5, [64, 128, 256, 512, 512], [2, 2, 2, 2, 2]),
    ("cnn", 3, [32, 64, 128], [1, 2, 2]),
])
def test_declared_blocks_match_what_they_compute(name, blocks, channels, strides):
    model = build_model(ModelSpec(name, 10, 3, 32)).eval()
    assert model.num_blocks == blocks
    assert [b.out_channels for b in model.block_info] == channels
    assert [b.stride for b in model.block_info] == strides
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        for block, info in zip(model.blocks, model.block_info):
            assert x.shape[1] == info.in_channels
            y = block(x)
            assert y.shape[1] == info.out_channels and y.shape[-1] == x.shape[-1] // info.stride
            x = y
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("width", [0.5, 0.25, 0.0625])
def test_width_twins_scale_every_layer_with_ceil(width):
    full = build_model(CIFAR)
    twin = build_model(CIFAR, width)
    assert [b.out_channels for b in twin.block_info] == [scaled(b.out_channels, width) for b in full.block_info]
    for (name, p), (_, q) in zip(full.named_parameters(), twin.named_parameters(), strict=True):
        assert all(b <= a for a, b in zip(p.shape, q.shape, strict=True)), name
    assert twin.block_info[0].in_channels == 3 and twin.head.fc.out_features == 10
    assert params(twin) < params(full) * width


def test_scaled_uses_ceil_and_never_zero():
    assert scaled(64, 1 / 16) == 4 and scaled(10, 0.25) == 3 and scaled(3, 0.01) == 1 and scaled(64, 1.0) == 64


def test_registry_lists_the_zoo_and_rejects_bad_width():
    assert MODELS.names() == ["cnn", "resnet18", "resnet34", "vgg11", "vgg16"]
    with pytest.raises(ValueError, match="width"):
        build_model(CIFAR, 0.0)
    with pytest.raises(KeyError, match="allowed: cnn"):
        build_model(ModelSpec("resnet50", 10, 3, 32))
