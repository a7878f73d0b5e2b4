"""Constants shared across the layers of the core, defined once.

They sit at the bottom of the core so that any layer can read them without importing another:
the model records the normalisation without importing the augmentation, and the configuration
checks the colour strength against the bound the augmentation recipe draws with.
"""

from __future__ import annotations

#: Normalisation used unless a model says otherwise (the ImageNet statistics timm uses).
DEFAULT_MEAN = (0.485, 0.456, 0.406)
DEFAULT_STD = (0.229, 0.224, 0.225)

#: Images of this side and smaller are CIFAR-like: ``auto`` picks the ``cifar`` augmentation
#: preset and the CIFAR stem for them, evaluation uses them whole (no centre crop) and
#: fine-tuning crops them with padding.
SMALL_IMAGE_SIZE = 64

#: Range of the colour strength s. The hue shift is drawn from [-0.2 s, 0.2 s] and must stay
#: within torchvision's [-0.5, 0.5], hence 2.5.
COLOR_STRENGTH_RANGE = (0.0, 2.5)

#: The global batch of ``pretrain`` when ``--batch-size`` is not given (a folder with fewer images
#: trains with the largest batch it fills).
DEFAULT_BATCH_SIZE = 256

#: The training size of ``pretrain`` without a time budget (the paper's), and the largest that
#: ``--image-size auto`` picks; never more than the data's own resolution (train/image_size.py).
DEFAULT_IMAGE_SIZE = 224
