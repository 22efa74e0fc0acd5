"""The model zoo; importing this package registers every model."""

from harness.models import cnn, resnet, vgg  # noqa: F401  (registration)
from harness.models.base import (
    MODELS,
    BlockInfo,
    BlockModel,
    ClassifierHead,
    ModelSpec,
    build_model,
    input_error,
    register_model,
    scaled,
)

__all__ = [
    "MODELS", "BlockInfo", "BlockModel", "ClassifierHead", "ModelSpec", "build_model", "input_error",
    "register_model", "scaled",
]
