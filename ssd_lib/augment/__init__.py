"""Training-time data augmentation for SSD (paper Sec. 2.2 "Data augmentation", Sec. 3.6 "zoom out").

SSD has no proposal stage to re-sample objects at many scales, so it leans on augmentation:
the min-IoU patch sampler adds 8.8 mAP on VOC2007 (Table 2) and the "zoom out" expansion
another 2.9 (74.3 -> 77.2). The training pipeline runs the steps of the released code
(ssd.pytorch ``SSDAugmentation``) in its order::

    PhotometricDistort -> ZoomOut -> MinIoURandomCrop -> RandomHorizontalFlip -> Resize
    -> SanitizeBoxes -> Normalize

Every step is a small frozen dataclass called as ``step(image, target, generator=None)``:
``image: (3, H, W)`` float in [0, 1], ``target["boxes"]: (G, 4)`` pixel xyxy in the image,
``target["labels"]: (G,)``, ``target["difficult"]: (G,)``; any other keys ride along. The
random steps split into ``make_params`` (draw the random choices) and ``apply`` (run them),
as torchvision.transforms.v2 does, so a notebook can show what was drawn. All randomness goes
through the optional ``torch.Generator``; without one, torch's global RNG is used (so
DataLoader worker seeding works).

Usage::

    aug = SSDAugmentation(size=300)
    image, target = aug(image, target, generator=torch.Generator().manual_seed(0))
    for step in aug.steps: image, target = step(image, target)      # one step at a time
"""
from .base import IMAGENET_MEAN, IMAGENET_STD, PER_BOX_KEYS, SSD_MIN_IOUS, Sample, Step, Target, validate_sample
from .geometric import MinIoURandomCrop, RandomHorizontalFlip, Resize, SanitizeBoxes, ZoomOut
from .photometric import Normalize, PhotometricDistort, denormalize
from .pipeline import Compose, SSDAugmentation, SSDTransform

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "PER_BOX_KEYS",
    "SSD_MIN_IOUS",
    "Step",
    "PhotometricDistort",
    "ZoomOut",
    "MinIoURandomCrop",
    "RandomHorizontalFlip",
    "Resize",
    "SanitizeBoxes",
    "Normalize",
    "Compose",
    "SSDAugmentation",
    "SSDTransform",
    "denormalize",
    "validate_sample",
]
