"""Backbones: any timm model, without its classifier, optionally with the CIFAR stem.

SimCLR's CIFAR-10 experiments (Chen et al. 2020, appendix B.9) replace the ResNet stem's 7x7
stride-2 convolution with a 3x3 stride-1 one and drop the first max-pool, so that 32 px images
keep enough resolution for the later stages. ``create_backbone`` does the same for timm ResNets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import timm
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from timm.models.resnet import BasicBlock, Bottleneck, ResNet
from torch import nn

from ..choices import Stem
from ..constants import SMALL_IMAGE_SIZE
from ..errors import BackboneError


def is_resnet_family(model: nn.Module) -> bool:
    """Whether ``model`` is a timm ResNet (resnet*, resnet*t, test_resnet, ...)."""
    return isinstance(model, ResNet)


def resolve_stem(stem: Stem | str, *, model: nn.Module, image_size: int) -> Stem:
    """Choose the stem that ``auto`` means for this model and image size.

    Args:
        stem: The requested stem.
        model: The timm model the stem applies to.
        image_size: Side of the training images in pixels.

    Returns:
        ``Stem.cifar`` or ``Stem.imagenet``.

    Raises:
        BackboneError: When the CIFAR stem is asked for a model that is not a ResNet.
    """
    stem = Stem(stem)
    if stem is Stem.auto:
        small = image_size <= SMALL_IMAGE_SIZE
        return Stem.cifar if small and is_resnet_family(model) else Stem.imagenet
    if stem is Stem.cifar and not is_resnet_family(model):
        raise BackboneError(
            f"--stem cifar applies to ResNet models only, not {type(model).__name__}; "
            "use --stem imagenet",
            flag="--stem",
        )
    return stem


def plan_stem(stem: Stem | str, *, backbone: str, image_size: int) -> Stem:
    """The stem ``create_backbone`` will give ``backbone``, decided before it is built.

    Whether ``auto`` means the CIFAR stem (and whether ``cifar`` is allowed) depends on the
    model's class, so for those cases the model is built on the meta device: no memory, no
    random numbers. A model that cannot be built there is built on the CPU instead.

    Args:
        stem: The requested stem.
        backbone: A timm model name.
        image_size: Side of the training images in pixels.

    Returns:
        ``Stem.cifar`` or ``Stem.imagenet``.

    Raises:
        BackboneError: For an unknown name, or the CIFAR stem asked for a model that is not a
            ResNet.
    """
    stem = Stem(stem)
    if stem is Stem.imagenet or (stem is Stem.auto and image_size > SMALL_IMAGE_SIZE):
        return Stem.imagenet
    try:
        with torch.device("meta"):
            skeleton = _create_timm_model(backbone, image_size=image_size)
    except BackboneError:
        raise
    except Exception:
        skeleton = _create_timm_model(backbone, image_size=image_size)
    return resolve_stem(stem, model=skeleton, image_size=image_size)


def apply_cifar_stem(model: nn.Module) -> None:
    """Give a timm ResNet the CIFAR stem in place: a stride-1 3x3 first conv and no max-pool.

    A plain stem's 7x7 stride-2 convolution becomes a 3x3 stride-1 one. A deep stem (resnet*t,
    resnet*d) keeps its 3x3 convolutions and only its first stride becomes 1, so its tensors keep
    their shapes.

    Args:
        model: A timm ``ResNet``.
    """
    first = cast(nn.Module, model.conv1)
    if isinstance(first, nn.Conv2d):
        model.conv1 = nn.Conv2d(
            first.in_channels, first.out_channels, kernel_size=3, stride=1, padding=1, bias=False
        )
    else:
        first_conv = next(m for m in first.modules() if isinstance(m, nn.Conv2d))
        first_conv.stride = (1, 1)
    model.maxpool = nn.Identity()


def restore_last_norms(model: nn.Module) -> None:
    """Give the last batch norm of every residual block a scale of one, as torchvision does.

    timm zero-initialises that scale ("zero_init_last"), which makes each block start as the
    identity: good for long supervised runs, but it leaves the random network with weak
    features (CIFAR-10 linear probe of a random resnet18: 0.217 with timm's init, 0.385 with
    torchvision's). It is not the default of ``create_backbone``: trained from it, SimCLR ended
    lower in both runs we measured (generated shapes, 200 steps: kNN 0.408 against 0.456 from
    timm's init; CIFAR-10 in 265 s: linear probe 0.331, against 0.353 for lightly's recipe from
    timm's init). See benchmarks/RESULTS.md.
    """
    for block in model.modules():
        if isinstance(block, BasicBlock):
            nn.init.ones_(cast(torch.Tensor, block.bn2.weight))
        elif isinstance(block, Bottleneck):
            nn.init.ones_(cast(torch.Tensor, block.bn3.weight))


def create_backbone(
    name: str,
    *,
    stem: Stem | str = Stem.auto,
    image_size: int = 224,
    init_weights: Path | None = None,
    unit_last_norms: bool = False,
) -> tuple[nn.Module, Stem]:
    """Create a timm model without classifier, ready to produce features.

    Args:
        name: Any timm model name, such as ``resnet18`` or ``vit_small_patch16_224``.
        stem: ``imagenet``, ``cifar``, or ``auto`` (CIFAR stem for ResNets at 64 px and below).
        image_size: Side of the input images; used by ``auto`` and by models that need a size.
        init_weights: Optional local safetensors file of timm weights to start from.
        unit_last_norms: Give ResNet blocks torchvision's unit-scale last norms instead of
            timm's zeros (``restore_last_norms``): stronger random features, weaker after SimCLR.

    Returns:
        The model, mapping images (B, 3, H, W) to features (B, model.num_features), and the stem
        it was given.

    Raises:
        BackboneError: For an unknown name or weights that do not fit.
    """
    model = _create_timm_model(name, image_size=image_size)
    if unit_last_norms and is_resnet_family(model):
        restore_last_norms(model)
    chosen = resolve_stem(stem, model=model, image_size=image_size)
    if chosen is Stem.cifar:
        apply_cifar_stem(model)
    if init_weights is not None:
        load_backbone_weights(model, Path(init_weights))
    return model, chosen


def _create_timm_model(name: str, *, image_size: int) -> nn.Module:
    if not timm.is_model(name):
        close = timm.list_models(f"*{name}*")[:5]
        hint = f" (close names: {', '.join(close)})" if close else ""
        raise BackboneError(
            f"unknown backbone {name!r}{hint}; see `timm.list_models()` for the names"
        )
    kwargs: dict[str, Any] = {"num_classes": 0, "pretrained": False}
    try:
        return timm.create_model(name, img_size=image_size, **kwargs)
    except TypeError:
        # Convolutional networks take any input size and reject the img_size argument.
        return timm.create_model(name, **kwargs)


def load_backbone_weights(model: nn.Module, path: Path) -> None:
    """Load a local safetensors file of weights into ``model``.

    Accepts timm's own files (a classifier in them is dropped) and simclr model files (their
    ``backbone.`` tensors are used). Nothing is downloaded and nothing is unpickled.

    Args:
        model: The backbone to fill.
        path: A ``.safetensors`` file.

    Raises:
        BackboneError: When the file is missing, not safetensors, or does not fit the model.
    """
    if not path.is_file():
        raise BackboneError(
            f"--init-weights {path} does not exist; give a local .safetensors file",
            flag="--init-weights",
        )
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise BackboneError(
            f"--init-weights {path} is not a readable safetensors file ({error}); "
            "convert it with safetensors.torch.save_file",
            flag="--init-weights",
        ) from None
    if any(key.startswith("backbone.") for key in tensors):
        tensors = {
            k[len("backbone.") :]: v for k, v in tensors.items() if k.startswith("backbone.")
        }
    own = model.state_dict()
    extra = [k for k in tensors if k not in own]
    # A classifier in a timm checkpoint is expected and dropped; anything else is a mismatch.
    tensors = {k: v for k, v in tensors.items() if k in own}
    missing = [k for k in own if k not in tensors]
    wrong = [k for k, v in tensors.items() if tuple(v.shape) != tuple(own[k].shape)]
    if missing or wrong or (extra and not tensors):
        detail = f"missing {missing[:3]}" if missing else f"shape mismatch in {wrong[:3]}"
        raise BackboneError(
            f"--init-weights {path} does not fit this backbone ({detail}); "
            "check --backbone and --stem",
            flag="--init-weights",
        )
    with torch.no_grad():
        model.load_state_dict(tensors, strict=True)
