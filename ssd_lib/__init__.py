"""ssd_lib: SSD (Liu et al., "SSD: Single Shot MultiBox Detector", ECCV 2016), one module per idea.

The folder is the course's table of contents; data flows one way::

    data -> augment -> model (priors) -> matching + boxes.encode -> loss -> train
    model -> detect (decode + NMS) -> metrics

Usage::

    from ssd_lib.model import ssd300_vgg16
    model = ssd300_vgg16(num_classes=21)
    loc, logits = model(images)            # (B, 8732, 4), (B, 8732, 21)
"""
__version__ = "0.1.0"
