"""Exercise checkers: compare the function a learner writes in a notebook with the library's.

Each ``check_*`` takes the learner's function (same signature as the library function it
re-implements), runs a few fixed cases named after what they test (empty inputs, disjoint boxes,
a tiny object, an image without positives, ...) and a few seeded random cases, and stops at the
first case that fails. It prints one line, either ``✅ check_iou passed: 10 cases`` or
``❌ check_iou: case 'disjoint boxes' (...): expected ..., got .... Hint: ...``, and returns a
:class:`CheckResult` that is truthy when every case passed. It never raises: an exception in the
learner's code is reported with its type and message. It also checks the shape and dtype of the
result and that the learner's function leaves its inputs unchanged. And it gives no credit for
calling the answer: while the learner's function runs, the library function the exercise asks for
and its torchvision twin fail the check (:mod:`.tripwire`; each exercise's text says what is allowed).
Every checker takes ``seed`` (default 0, the public cases): another seed draws other random cases,
so a hidden test (``check_iou(iou, seed=...)``) is not passed by a solution fitted to the public ones.

Usage (the check cell after an exercise)::

    from ssd_lib.course.checks import check_iou
    assert check_iou(iou)      # prints the pass line, or the first failing case with a hint
    ### BEGIN HIDDEN TESTS
    from ssd_lib.course.checks import hidden_tests
    assert hidden_tests(check_iou, iou, seeds=(5081, 77))   # other seeds, float64, CUDA if present
    ### END HIDDEN TESTS

One module per lesson, on the shared machinery of ``harness`` (cases, comparisons, messages):

====  ===============  ====================================================================
  1   ``boxes``        ``check_iou``, ``check_xyxy_to_cxcywh``
  2   ``priors``       ``check_scales``, ``check_default_boxes``
  3   ``matching``     ``check_match``, ``check_encode``
  4   ``network``      ``check_out_size``; ``check_predict`` (module ``heads``)
  5   ``loss``         ``check_smooth_l1``, ``check_hard_negative_mining`` (and, in ``multibox``,
                       ``check_multibox_loss``)
  6   ``augment``      ``check_hflip`` (and, in ``crop``, ``check_min_iou_crop``)
  7   ``train``        ``check_lr_schedule`` (and, in ``sgd``, ``check_sgd_step``)
  8   ``detect``       ``check_decode``, ``check_nms``
  9   ``metrics``      ``check_tp_fp``, ``check_average_precision``
 10   ``ablations``    ``check_compare_runs``, ``check_summarize``
 11   ``lab``          ``check_clip_priors``, ``check_labels_from_names``, ``check_num_classes``,
                       ``check_sanitize_boxes``, ``check_mean_average_precision`` (and, in
                       ``diagnoses``, ``check_diagnose_decode``, ``check_diagnose_loc_loss``,
                       ``check_diagnose_mining``, ``check_diagnose_warmup``)
 12   ``export``       ``check_predict_with``, ``check_same_detections``
====  ===============  ====================================================================

Every checker is importable from here.
"""
from .ablations import check_compare_runs, check_summarize
from .augment import check_hflip
from .boxes import check_iou, check_xyxy_to_cxcywh
from .capstone import check_batch_targets, check_postprocess, check_trained_detector
from .crop import check_min_iou_crop
from .detect import check_decode, check_nms
from .diagnoses import check_diagnose_decode, check_diagnose_loc_loss, check_diagnose_mining, check_diagnose_warmup
from .export import check_predict_with, check_same_detections
from .harness import CheckResult
from .hidden import hidden_tests
from .lab import (check_clip_priors, check_labels_from_names, check_mean_average_precision, check_num_classes,
                  check_sanitize_boxes)
from .loss import check_hard_negative_mining, check_smooth_l1
from .matching import check_encode, check_match
from .metrics import check_average_precision, check_tp_fp
from .multibox import check_multibox_loss
from .network import check_out_size
from .heads import check_predict
from .priors import check_default_boxes, check_scales
from .sgd import check_sgd_step
from .train import check_lr_schedule

__all__ = [
    "CheckResult",
    "hidden_tests",
    "check_iou",
    "check_xyxy_to_cxcywh",
    "check_encode",
    "check_out_size",
    "check_predict",
    "check_decode",
    "check_scales",
    "check_default_boxes",
    "check_match",
    "check_smooth_l1",
    "check_hard_negative_mining",
    "check_multibox_loss",
    "check_hflip",
    "check_min_iou_crop",
    "check_nms",
    "check_average_precision",
    "check_tp_fp",
    "check_lr_schedule",
    "check_sgd_step",
    "check_compare_runs",
    "check_summarize",
    "check_predict_with",
    "check_same_detections",
    "check_clip_priors",
    "check_labels_from_names",
    "check_num_classes",
    "check_sanitize_boxes",
    "check_mean_average_precision",
    "check_diagnose_decode",
    "check_diagnose_loc_loss",
    "check_diagnose_mining",
    "check_diagnose_warmup",
    "check_batch_targets",
    "check_postprocess",
    "check_trained_detector",
]
