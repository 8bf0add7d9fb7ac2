"""From a trained SSD to a deployed one: export the network to ONNX, run it with ONNX Runtime, quantise
it to int8, and check that every path gives the same detections.

SSD deploys well because it is one network plus a short post-processing (paper Sec. 2.1 and 3.7).
The ONNX file holds the network (``images -> loc, logits``, a dynamic batch axis; optionally the
decoding of Sec. 2.2 and the softmax too: ``images -> boxes, scores``). What surrounds it stays in
this library and is shared by both paths: the preprocessing (resize, normalise: ``preprocess``) and
the score threshold, per-class NMS and top-k of :func:`ssd_lib.detect.detect`. The file also carries
what a deployer needs in its metadata: the model configuration (so the default boxes can be
rebuilt), the class names and the preprocessing. ``onnx``, ``onnxruntime`` and ``onnxscript`` are
the optional ``deploy`` extra (``pip install -e ".[deploy]"``).

Usage::

    from ssd_lib.export import export_onnx, OnnxDetector, preprocess
    export_onnx(model, "ssd.onnx", class_names=classes)   # checked with onnx.checker
    detector = OnnxDetector("ssd.onnx")                     # ONNX Runtime, CPU
    dets = detector.predict(images)   # as ssd_lib.evaluate.predict(model, images): pixel xyxy, scores, labels
    loc, logits = detector.run(preprocess(images, detector.image_size))   # the network's raw outputs

Submodules: ``graph`` (the exported network, the file, its metadata), ``quantize`` (int8), ``runtime``
(ONNX Runtime: :class:`OnnxDetector`, :func:`predict_with`), ``compare`` (do two paths agree, how fast).
"""
from ssd_lib.detect import detect_decoded

from .compare import compare_detections, images_per_second, match_detections, same_detections
from .graph import (DECODED_OUTPUTS, DEFAULT_OPSET, DEPLOY_INSTALL, INPUT_NAME, METADATA_FORMAT, RAW_OUTPUTS,
                    DecodedSSD, MissingDeployExtra, export_onnx, onnx_summary, preprocess, require_deploy)
from .quantize import quantize_onnx
from .runtime import OnnxDetector, predict_with

__all__ = [
    "DEPLOY_INSTALL", "MissingDeployExtra", "require_deploy",
    "INPUT_NAME", "RAW_OUTPUTS", "DECODED_OUTPUTS", "METADATA_FORMAT",
    "DecodedSSD", "preprocess", "export_onnx", "onnx_summary", "quantize_onnx",
    "OnnxDetector", "predict_with", "detect_decoded",
    "match_detections", "same_detections", "compare_detections", "images_per_second",
]
