"""torchvision's SSD300, set up to compute what ours computes, and the calls its ``SSD.forward`` makes.

Three changes make the two models comparable, none of which touches torchvision's algorithms:

* **Same default boxes.** torchvision's ``ssd300_vgg16`` uses scales 0.07, 0.15, ... (its COCO
  recipe); ours are the released VOC boxes (30, 60, 111, ... px). :func:`anchor_generator_like` builds
  a ``DefaultBoxGenerator`` with our scales and ``clip=False``; it reproduces our 8732 boxes.
* **No input transform.** ``model.transform`` becomes a ``GeneralizedRCNNTransform`` with mean 0,
  std 1, fixed size 300 and ``_skip_resize=True``: a no-op on 300x300 tensors (it still copies the
  images into a batch, part of torchvision's training step).
* **Same weights.** :func:`model_pair` copies torchvision's randomly initialised weights into ours
  with ``ssd_lib.model.load_torchvision_ssd300``. No weights are downloaded.

Usage::

    ours, theirs = model_pair(num_classes=21)
    head_outputs = head_forward(theirs, images)                 # backbone + head, as SSD.forward does
    losses = compute_loss(theirs, targets, head_outputs, anchors_list)
"""
from __future__ import annotations

import torch
from torch import Tensor
from torchvision.models.detection import ssd300_vgg16 as tv_ssd300_vgg16
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.ssd import SSD as TorchvisionSSD
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import boxes as box_ops

from ssd_lib.detect import NMS_THRESHOLD, PRE_NMS_TOP_K, SCORE_THRESHOLD, TOP_K
from ssd_lib.model import SSD, load_torchvision_ssd300, ssd300_vgg16
from ssd_lib.priors import PriorConfig

__all__ = [
    "anchor_generator_like", "identity_transform", "torchvision_ssd300", "model_pair",
    "torchvision_ssd_algorithms", "torchvision_anchors", "head_forward", "match_per_image", "compute_loss",
    "postprocess",
]


def anchor_generator_like(cfg: PriorConfig) -> DefaultBoxGenerator:
    """A torchvision ``DefaultBoxGenerator`` that lays out the same default boxes as ``cfg``.

    torchvision takes one list of m + 1 scales, s'_k = sqrt(s_k s_{k+1}); ours takes min and max
    sizes per map, s'_k = sqrt(min_k max_k). They agree when max_k = min_{k+1}, true of SSD300.
    """
    if any(hi != lo for hi, lo in zip(cfg.max_sizes[:-1], cfg.min_sizes[1:])):
        raise ValueError("anchor_generator_like needs max_sizes[k] == min_sizes[k + 1] (torchvision's scale list)")
    scales = [s / cfg.image_size for s in cfg.min_sizes] + [cfg.max_sizes[-1] / cfg.image_size]
    return DefaultBoxGenerator([list(r) for r in cfg.aspect_ratios], scales=scales, steps=list(cfg.steps), clip=False)


def identity_transform(image_size: int) -> GeneralizedRCNNTransform:
    """torchvision's transform with nothing left to do on ``image_size`` square images: mean 0, std 1, no resize."""
    return GeneralizedRCNNTransform(image_size, image_size, [0.0, 0.0, 0.0], [1.0, 1.0, 1.0],
                                    size_divisible=1, fixed_size=(image_size, image_size), _skip_resize=True)


def torchvision_ssd300(num_classes: int = 21, cfg: PriorConfig | None = None) -> TorchvisionSSD:
    """torchvision's ``ssd300_vgg16`` with random weights (nothing downloaded), our default boxes, no transform."""
    cfg = cfg or PriorConfig.ssd300()
    model = tv_ssd300_vgg16(weights=None, weights_backbone=None, num_classes=num_classes)
    model.anchor_generator = anchor_generator_like(cfg)
    model.transform = identity_transform(cfg.image_size)
    return model


def model_pair(num_classes: int = 21, seed: int = 0) -> tuple[SSD, TorchvisionSSD]:
    """Our SSD300 and torchvision's, with identical weights (torchvision's seeded random init, copied)."""
    torch.manual_seed(seed)
    theirs = torchvision_ssd300(num_classes)
    ours = load_torchvision_ssd300(ssd300_vgg16(num_classes), theirs.state_dict())
    return ours, theirs


def head_forward(model: TorchvisionSSD, images: Tensor) -> dict[str, Tensor]:
    """Backbone then head, as ``SSD.forward`` calls them: ``bbox_regression (B, P, 4)``, ``cls_logits (B, P, C)``."""
    features = list(model.backbone(images).values())
    return model.head(features)


def match_per_image(model: TorchvisionSSD, targets: list[dict[str, Tensor]], anchors: list[Tensor]) -> list[Tensor]:
    """``matched_idxs`` exactly as ``SSD.forward`` builds them: one IoU matrix and one ``SSDMatcher`` call per image."""
    matched_idxs = []
    for anchors_per_image, targets_per_image in zip(anchors, targets):
        if targets_per_image["boxes"].numel() == 0:
            matched_idxs.append(torch.full((anchors_per_image.size(0),), -1, dtype=torch.int64,
                                           device=anchors_per_image.device))
            continue
        match_quality_matrix = box_ops.box_iou(targets_per_image["boxes"], anchors_per_image)
        matched_idxs.append(model.proposal_matcher(match_quality_matrix))
    return matched_idxs


def compute_loss(model: TorchvisionSSD, targets: list[dict[str, Tensor]], head_outputs: dict[str, Tensor],
                 anchors: list[Tensor]) -> dict[str, Tensor]:
    """Matching then ``SSD.compute_loss``: ``{"bbox_regression", "classification"}``, each divided by N."""
    return model.compute_loss(targets, head_outputs, anchors, match_per_image(model, targets, anchors))


def postprocess(model: TorchvisionSSD, head_outputs: dict[str, Tensor], anchors: list[Tensor],
                image_size: int) -> list[dict[str, Tensor]]:
    """``SSD.postprocess_detections`` for square images of side ``image_size``: boxes in pixels."""
    return model.postprocess_detections(head_outputs, anchors, [(image_size, image_size)] * len(anchors))


def torchvision_ssd_algorithms(num_classes: int = 21, cfg: PriorConfig | None = None) -> TorchvisionSSD:
    """torchvision's ``SSD`` class with the network left out (identity backbone and head): its matcher,
    ``compute_loss`` and ``postprocess_detections`` with ``ssd300_vgg16``'s settings (IoU 0.5, 3:1
    negatives, score 0.01, NMS 0.45, 400 candidates per class, 200 per image). Building it skips
    VGG16's 138M-parameter random init, which cases 1 and 2 do not use."""
    cfg = cfg or PriorConfig.ssd300()
    size = (cfg.image_size, cfg.image_size)
    # The selection settings are torchvision's defaults; passed from ssd_lib.detect so both sides select alike.
    return TorchvisionSSD(torch.nn.Identity(), anchor_generator_like(cfg), size, num_classes, head=torch.nn.Identity(),
                          score_thresh=SCORE_THRESHOLD, nms_thresh=NMS_THRESHOLD, detections_per_img=TOP_K,
                          topk_candidates=PRE_NMS_TOP_K)


def torchvision_anchors(model: TorchvisionSSD, cfg: PriorConfig, batch: int, device: torch.device) -> list[Tensor]:
    """What ``model.anchor_generator`` returns inside ``SSD.forward`` for ``batch`` images: B tensors (P, 4) xyxy pixels.
    Only the feature maps' sides matter to it, so empty maps of those sides stand in for the backbone."""
    size = cfg.image_size
    images = ImageList(torch.empty(batch, 3, size, size, device=device), [(size, size)] * batch)
    feature_maps = [torch.empty(batch, 1, f, f, device=device) for f in cfg.feature_maps]
    return model.anchor_generator(images, feature_maps)
