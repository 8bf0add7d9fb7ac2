"""ssd_lib: SSD (Liu et al., "SSD: Single Shot MultiBox Detector", ECCV 2016), one module per idea.

The folder is the course's table of contents. Lesson -> module (paper section):

====  =================================  =======================================================
  1   ``boxes``                          box formats, IoU, encode / decode (Sec. 2.2, Eq. 2)
  2   ``priors``                         default boxes: scales and aspect ratios (Sec. 2.2, Eq. 4)
  3   ``matching``                       matching strategy: forced best box + IoU > 0.5 (Sec. 2.2)
  4   ``model``                          VGG16 base, extra layers, heads; SSD300/512, small (Sec. 2.1)
  5   ``loss``                           MultiBox loss with hard negative mining (Sec. 2.2, Eq. 1-3)
  6   ``data``, ``augment``              Shapes, VOC, COCO; sampling, zoom out, flip (Sec. 2.2)
  7   ``train``, ``checkpoint``          the loop, lr schedule (Sec. 3); save / resume
  8   ``detect``                         decode + score threshold + per-class NMS + top-k (Sec. 3)
  9   ``metrics``, ``evaluate``          VOC AP and COCO AP; running a model over a dataset
 10   ``ssd_lib.course.ablations``       the paper's ablations (Sec. 3.2, Tables 2-3)
 11   ``debugging``                      overfit one batch; ``viz`` draws the training log
 12   ``export``                         ONNX, ONNX Runtime, int8
====  =================================  =======================================================

Data flows one way. Training: data -> augment -> model (priors) -> matching + boxes.encode -> loss
-> train. Inference: model -> detect (decode + NMS) -> metrics. Deployment: export.
:data:`LAYERS` is the same map as the imports see it, bottom row first: a module imports only
modules of rows below its own (``tests/test_layout.py`` checks it). The course's machinery
(checkers, widgets, grader, student versions, site, doctor, model card, lesson 11's lab, the
ablation runner) is the package ``ssd_lib.course``, above all of these; nothing here imports it.

Usage::

    from ssd_lib.model import ssd300_vgg16
    model = ssd300_vgg16(num_classes=21)
    loc, logits = model(images)            # (B, 8732, 4), (B, 8732, 21)
"""
__version__ = "0.1.0"

LAYERS: tuple[tuple[str, ...], ...] = (
    ("files", "machine"),  # plumbing: atomic writes; what a measurement ran on
    ("boxes",),            # lesson 1
    ("priors",),           # lesson 2
    ("matching",),         # lesson 3
    ("model",),            # lesson 4 (its default boxes come from priors)
    ("loss",),             # lesson 5
    ("data",),             # lesson 6: the datasets ...
    ("augment",),          # ... and their augmentation
    ("detect",),           # lesson 8: below train, whose validation runs detect and metrics
    ("metrics",),          # lesson 9
    ("evaluate",),         # lesson 9: a model over a dataset -> metrics
    ("viz",),              # pictures, the training log included
    ("checkpoint",),       # lesson 7: save / load / resume
    ("train",),            # lesson 7
    ("debugging",),        # lesson 11
    ("export",),           # lesson 12
    ("cli",),              # the library's commands (main, train, eval, detect, export, render) ...
    ("__main__",),         # ... and python -m ssd_lib: their parser, plus the commands the course registers
)
