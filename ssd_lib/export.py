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

    from ssd_lib.export import export_onnx, OnnxDetector
    export_onnx(model, "ssd.onnx", class_names=classes)   # checked with onnx.checker
    detector = OnnxDetector("ssd.onnx")                     # ONNX Runtime, CPU
    dets = detector.predict(images)   # as ssd_lib.evaluate.predict(model, images): pixel xyxy, scores, labels
"""
from __future__ import annotations

import importlib
import json
import os
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from .augment import IMAGENET_MEAN, IMAGENET_STD, SSDTransform
from .boxes import DEFAULT_VARIANCES, decode
from .detect import detect, detect_decoded, scale_detections
from .files import atomic_write
from .metrics import evaluate_voc
from .model import SSD, ModelConfig
from .priors import default_boxes

__all__ = [
    "DEPLOY_INSTALL", "MissingDeployExtra", "require_deploy",
    "INPUT_NAME", "RAW_OUTPUTS", "DECODED_OUTPUTS", "METADATA_FORMAT",
    "DecodedSSD", "preprocess", "export_onnx", "onnx_summary", "quantize_onnx",
    "OnnxDetector", "predict_with", "detect_decoded",
    "match_detections", "same_detections", "compare_detections", "images_per_second",
]

DEPLOY_INSTALL = 'pip install -e ".[deploy]"'
INPUT_NAME = "images"
RAW_OUTPUTS = ("loc", "logits")
DECODED_OUTPUTS = ("boxes", "scores")
METADATA_FORMAT = "ssd_lib.onnx/1"
DEFAULT_OPSET = 18
_MAX_BATCH = 4096  # the dynamic batch axis: torch.export needs an upper bound

# ---------------------------------------------------------------- the optional extra


class MissingDeployExtra(ImportError):
    """onnx / onnxruntime / onnxscript is not installed; the message says which extra to install."""


def require_deploy(*modules: str) -> tuple:
    """Import ``modules`` (default: onnx, onnxruntime) or raise :class:`MissingDeployExtra` in one line."""
    modules = modules or ("onnx", "onnxruntime")
    loaded = []
    for name in modules:
        try:
            loaded.append(importlib.import_module(name))
        except ImportError:
            raise MissingDeployExtra(
                f"{name} is not installed; ONNX export and ONNX Runtime need the deploy extra: {DEPLOY_INSTALL}"
            ) from None
    return tuple(loaded)


# ---------------------------------------------------------------- the network, as exported


class DecodedSSD(nn.Module):
    """An SSD with decoding and softmax in the graph: ``images (B, 3, S, S)`` ->
    ``boxes (B, P, 4)`` xyxy clipped to [0, 1] and ``scores (B, P, C)`` (softmax, column 0 = background).

    What is left outside is the selection: threshold, per-class NMS, top-k (:func:`detect_decoded`).
    """

    def __init__(self, model: SSD, variances: tuple[float, float] = DEFAULT_VARIANCES) -> None:
        super().__init__()
        self.model = model
        self.variances = tuple(variances)
        self.register_buffer("priors", model.priors.detach().clone(), persistent=False)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        loc, logits = self.model(images)
        return decode(loc, self.priors, self.variances).clamp(0.0, 1.0), logits.softmax(dim=-1)


def preprocess(images: Sequence[Tensor], image_size: int) -> Tensor:
    """What both paths feed the network, as :func:`ssd_lib.evaluate.predict` does: each ``(3, H, W)``
    image in [0, 1] resized (bilinear, no antialias) to ``image_size`` and normalised with the ImageNet
    mean and std. Returns ``(B, 3, image_size, image_size)`` float32."""
    if len(images) == 0:
        raise ValueError("no images to preprocess; pass a list of (3, H, W) tensors in [0, 1]")
    transform = SSDTransform(size=image_size)
    no_boxes = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}
    return torch.stack([transform(image.float().cpu(), no_boxes)[0] for image in images])


def _metadata(model: SSD, class_names: Sequence[str] | None, outputs: str, variances: tuple[float, float]) -> dict:
    config = model.config or ModelConfig(getattr(model, "arch", "unknown"), model.num_classes, model.prior_config)
    size = model.prior_config.image_size
    return {
        "ssd_lib.format": METADATA_FORMAT,
        "ssd_lib.model_config": json.dumps(config.to_dict()),
        "ssd_lib.class_names": json.dumps(list(class_names) if class_names is not None else []),
        "ssd_lib.outputs": outputs,
        "ssd_lib.variances": json.dumps(list(variances)),
        "ssd_lib.preprocessing": json.dumps({
            "input": "RGB float32 in [0, 1], NCHW", "resize": [size, size],
            "interpolation": "bilinear, align_corners=False, no antialias",
            "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}),
        "ssd_lib.postprocessing": json.dumps({
            "score_threshold": 0.01, "nms_threshold": 0.45, "top_k": 200, "pre_nms_top_k": 400,
            "nms": "per class", "boxes": "xyxy in [0, 1] of the input, scale by the original width and height"}),
    }


def export_onnx(model: SSD, path: str | Path, *, decode_in_graph: bool = False, class_names: Sequence[str] | None = None,
                opset: int = DEFAULT_OPSET, variances: tuple[float, float] = DEFAULT_VARIANCES) -> Path:
    """Export ``model`` to the ONNX file ``path`` and check it with ``onnx.checker`` (full check).

    Input ``images (batch, 3, S, S)`` (normalised, see :func:`preprocess`); outputs ``loc (batch, P, 4)``
    and ``logits (batch, P, C)``, or with ``decode_in_graph`` ``boxes`` and ``scores`` (:class:`DecodedSSD`).
    The batch axis is dynamic. Uses PyTorch's ``torch.export``-based exporter (batch norm folded into
    the convolutions). The file is written atomically, with the metadata :class:`OnnxDetector` reads.
    """
    onnx, _ = require_deploy("onnx", "onnxscript")
    if not isinstance(model, SSD):
        raise TypeError(f"model must be an ssd_lib SSD, got {type(model).__name__}")
    path = Path(path)
    if path.suffix.lower() != ".onnx":
        raise ValueError(f"the output file should end in .onnx, got {path.name!r}")
    device, was_training = model.priors.device, model.training
    outputs = DECODED_OUTPUTS if decode_in_graph else RAW_OUTPUTS
    size = model.prior_config.image_size
    # Batch 2 in the example: torch.export treats a size-1 axis as a constant ("0/1 specialisation").
    example = torch.zeros(2, 3, size, size)
    batch = torch.export.Dim("batch", min=1, max=_MAX_BATCH)
    try:
        model.eval().cpu()  # batch norm with its running statistics: the inference graph
        network = DecodedSSD(model, variances).eval() if decode_in_graph else model
        with torch.no_grad():
            program = torch.onnx.export(network, (example,), None, input_names=[INPUT_NAME],
                                        output_names=list(outputs), dynamic_shapes={"images": {0: batch}},
                                        opset_version=opset, dynamo=True, verbose=False)
    finally:
        model.to(device).train(was_training)  # the caller's model is left as it was
    proto = program.model_proto
    del proto.metadata_props[:]
    for key, value in _metadata(model, class_names, "decoded" if decode_in_graph else "raw", variances).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto, full_check=True)
    return atomic_write(path, lambda tmp: onnx.save_model(proto, str(tmp)))


def onnx_summary(path: str | Path) -> dict[str, Any]:
    """What is inside an ONNX file: ``inputs``/``outputs`` ({name: shape, a string for a dynamic axis}),
    ``operators`` (Counter of op types), ``nodes``, ``parameters`` (weights), ``opset``, ``file_mb``,
    ``metadata`` (dict)."""
    (onnx,) = require_deploy("onnx")
    model = onnx.load(str(path))

    def shape(value_info) -> list:
        return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]

    initializers = {init.name for init in model.graph.initializer}
    return {
        "inputs": {v.name: shape(v) for v in model.graph.input if v.name not in initializers},
        "outputs": {v.name: shape(v) for v in model.graph.output},
        "operators": Counter(node.op_type for node in model.graph.node),
        "nodes": len(model.graph.node),
        "parameters": int(sum(np.prod(init.dims) for init in model.graph.initializer)),
        "opset": max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=None),
        "file_mb": Path(path).stat().st_size / 2**20,
        "metadata": {p.key: p.value for p in model.metadata_props},
    }


# ---------------------------------------------------------------- int8


class _CalibrationReader:
    """ONNX Runtime's CalibrationDataReader protocol over preprocessed batches (numpy float32)."""

    def __init__(self, batches: Iterable[np.ndarray]) -> None:
        self._batches = iter(batches)

    def get_next(self) -> dict | None:
        batch = next(self._batches, None)
        return None if batch is None else {INPUT_NAME: np.ascontiguousarray(batch, dtype=np.float32)}

    def rewind(self) -> None:  # not needed by the MinMax calibrator; part of the protocol
        pass


def quantize_onnx(src: str | Path, dst: str | Path, calibration_images: Sequence[Tensor] | None = None,
                  method: str = "static", batch_size: int = 8) -> Path:
    """Write an int8 version of the ONNX file ``src`` to ``dst`` with ONNX Runtime's quantisation tools.

    ``method="static"``: weights (per channel) and activations in int8 (QDQ format); the activation
    ranges come from running ``calibration_images`` (list of ``(3, H, W)`` in [0, 1], e.g. 100 training
    images) through the fp32 model. ``method="dynamic"``: weights only; activation ranges are computed
    at run time (no calibration, but convolutions become ``ConvInteger``, often slower on CPU).
    The metadata of ``src`` is kept.
    """
    onnx, _ = require_deploy("onnx", "onnxruntime")
    from onnxruntime import quantization as q
    from onnxruntime.quantization.shape_inference import quant_pre_process

    src, dst = Path(src), Path(dst)
    metadata = {p.key: p.value for p in onnx.load(str(src)).metadata_props}
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp_pre = dst.with_name(f".{dst.stem}.pre{os.getpid()}.onnx")
    tmp_out = dst.with_name(f".{dst.stem}.q{os.getpid()}.onnx")
    try:
        # Shape inference and graph clean-up first, as ONNX Runtime recommends before quantising.
        quant_pre_process(str(src), str(tmp_pre), skip_symbolic_shape=True)
        if method == "static":
            if not calibration_images:
                raise ValueError("static quantisation needs calibration_images (e.g. 100 training images)")
            size = json.loads(metadata["ssd_lib.model_config"])["priors"]["image_size"]
            batches = (preprocess(calibration_images[i:i + batch_size], size).numpy()
                       for i in range(0, len(calibration_images), batch_size))
            q.quantize_static(str(tmp_pre), str(tmp_out), _CalibrationReader(batches),
                              quant_format=q.QuantFormat.QDQ, per_channel=True,
                              activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8,
                              calibrate_method=q.CalibrationMethod.MinMax)
        elif method == "dynamic":
            q.quantize_dynamic(str(tmp_pre), str(tmp_out), weight_type=q.QuantType.QUInt8)
        else:
            raise ValueError(f"method must be 'static' or 'dynamic', got {method!r}")
        quantized = onnx.load(str(tmp_out))
        del quantized.metadata_props[:]
        metadata["ssd_lib.quantization"] = (f"int8 static, QDQ, per-channel weights, MinMax calibration on "
                                            f"{len(calibration_images)} images" if method == "static"
                                            else "int8 dynamic (weights only)")
        for key, value in metadata.items():
            entry = quantized.metadata_props.add()
            entry.key, entry.value = key, value
        atomic_write(dst, lambda tmp: onnx.save_model(quantized, str(tmp)))
    finally:
        for tmp in (tmp_pre, tmp_out):
            tmp.unlink(missing_ok=True)
        for leftover in dst.parent.glob(f".{dst.stem}.pre{os.getpid()}*"):  # external-data side files
            leftover.unlink(missing_ok=True)
    return dst


# ---------------------------------------------------------------- running it


def predict_with(run_network: Callable[[np.ndarray], Sequence[np.ndarray]], images: Sequence[Tensor],
                 priors_cxcywh: Tensor, image_size: int, score_threshold: float = 0.01) -> list[dict[str, Tensor]]:
    """Detections in pixel xyxy of each original image, whatever runs the network.

    ``run_network``: numpy ``(B, 3, S, S)`` float32, normalised -> ``(loc (B, P, 4), logits (B, P, C))``
    numpy (an ONNX Runtime session, or a PyTorch model wrapped). ``images``: list of ``(3, H, W)`` in
    [0, 1] of any sizes. The same three steps as :func:`ssd_lib.evaluate.predict`: :func:`preprocess`,
    the network, then :func:`ssd_lib.detect.detect` and :func:`ssd_lib.detect.scale_detections`.
    """
    batch = preprocess(images, image_size).numpy()
    loc, logits = run_network(batch)
    dets = detect(torch.as_tensor(np.asarray(loc)), torch.as_tensor(np.asarray(logits)), priors_cxcywh.cpu(),
                  score_threshold)
    return scale_detections(dets, [tuple(image.shape[-2:]) for image in images])


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__)[:300]


class OnnxDetector:
    """An exported SSD run by ONNX Runtime (CPU), with the post-processing of :mod:`ssd_lib.detect`.

    ``path``: a file written by :func:`export_onnx` (or any file with input ``images (batch, 3, S, S)``
    and outputs ``loc, logits`` / ``boxes, scores``, given its ``config``). ``num_threads``: ONNX
    Runtime's intra-op threads (default: ``torch.get_num_threads()``, so both paths use the same
    cores). A missing, truncated or foreign file raises ``FileNotFoundError`` / ``ValueError`` with
    a one-line reason. Attributes: ``image_size``, ``num_classes`` (with background), ``class_names``,
    ``decoded`` (outputs are boxes/scores), ``priors`` ``(P, 4)`` cxcywh, ``config``, ``metadata``.
    """

    def __init__(self, path: str | Path, num_threads: int | None = None, config: ModelConfig | None = None) -> None:
        (ort,) = require_deploy("onnxruntime")
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"ONNX file {self.path} does not exist; write it with "
                                    f"`python -m ssd_lib export --output {self.path}`")
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(num_threads or torch.get_num_threads())
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as error:  # truncated file, not ONNX, unsupported operator...
            raise ValueError(f"ONNX Runtime cannot load {self.path}: {_first_line(error)} "
                             "(is the file complete? export it again)") from None
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        self._check_signature()
        if config is None:
            if "ssd_lib.model_config" not in self.metadata:
                raise ValueError(f"{self.path} has no ssd_lib metadata (model configuration, class names); "
                                 "export it with `python -m ssd_lib export`, or pass its ModelConfig as config=")
            config = ModelConfig.from_dict(json.loads(self.metadata["ssd_lib.model_config"]))
        self.config = config
        self.image_size = config.priors.image_size
        self.num_classes = config.num_classes
        self.priors = default_boxes(config.priors)
        self.variances = tuple(json.loads(self.metadata.get("ssd_lib.variances", "null")) or DEFAULT_VARIANCES)
        names = json.loads(self.metadata.get("ssd_lib.class_names", "[]"))
        self.class_names = names if len(names) == self.num_classes - 1 else [f"class {i}" for i in range(1, self.num_classes)]
        self._check_against_config()

    def _check_signature(self) -> None:
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        names = tuple(o.name for o in outputs)
        if names not in (RAW_OUTPUTS, DECODED_OUTPUTS):
            raise ValueError(f"{self.path} has outputs {list(names)}, not an exported SSD: expected "
                             f"{list(RAW_OUTPUTS)} (or {list(DECODED_OUTPUTS)} with decoding in the graph)")
        if len(inputs) != 1 or inputs[0].name != INPUT_NAME or len(inputs[0].shape) != 4:
            found = [(i.name, i.shape) for i in inputs]
            raise ValueError(f"{self.path} takes inputs {found}; an exported SSD takes one input "
                             f"{INPUT_NAME!r} of shape (batch, 3, S, S)")
        self.decoded = names == DECODED_OUTPUTS
        self._input_shape = inputs[0].shape
        self._output_shapes = [o.shape for o in outputs]

    def _check_against_config(self) -> None:
        _, channels, height, width = self._input_shape
        size = self.image_size
        if (channels, height, width) != (3, size, size):
            raise ValueError(f"{self.path} takes images of shape {self._input_shape[1:]}, but its model configuration "
                             f"lays out the default boxes for 3x{size}x{size}: the file does not belong to this model")
        num_priors = len(self.priors)
        for name, shape, last in zip(DECODED_OUTPUTS if self.decoded else RAW_OUTPUTS, self._output_shapes,
                                     (4, self.num_classes)):
            if len(shape) != 3 or (isinstance(shape[1], int) and shape[1] != num_priors) or \
                    (isinstance(shape[2], int) and shape[2] != last):
                raise ValueError(f"{self.path}: output {name!r} has shape {shape}, but the model configuration "
                                 f"gives (batch, {num_priors}, {last}): the file does not belong to this model")

    def run(self, batch: Tensor | np.ndarray) -> tuple[Tensor, Tensor]:
        """The raw outputs for a preprocessed ``batch (B, 3, S, S)``: ``(loc, logits)``, or
        ``(boxes, scores)`` for a file with decoding in the graph; float32 CPU tensors."""
        array = batch.detach().cpu().numpy() if isinstance(batch, Tensor) else np.asarray(batch)
        if array.ndim != 4 or array.shape[1:] != (3, self.image_size, self.image_size):
            raise ValueError(f"batch must have shape (B, 3, {self.image_size}, {self.image_size}); got "
                             f"{tuple(array.shape)} (use ssd_lib.export.preprocess)")
        first, second = self.session.run(None, {INPUT_NAME: np.ascontiguousarray(array, dtype=np.float32)})
        return torch.from_numpy(first), torch.from_numpy(second)

    def _run_numpy(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return tuple(t.numpy() for t in self.run(batch))

    def predict(self, images: Sequence[Tensor], score_threshold: float = 0.01, nms_threshold: float = 0.45,
                top_k: int = 200, batch_size: int = 32) -> list[dict[str, Tensor]]:
        """Detections in pixel xyxy of each original image (``images``: list of ``(3, H, W)`` in [0, 1]),
        the same format as :func:`ssd_lib.evaluate.predict`: ``boxes (D, 4)``, ``scores (D,)``, ``labels (D,)``."""
        out: list[dict[str, Tensor]] = []
        for start in range(0, len(images), batch_size):  # a loop over batches: bounded memory
            chunk = list(images[start:start + batch_size])
            first, second = self.run(preprocess(chunk, self.image_size))
            if self.decoded:
                dets = detect_decoded(first, second, score_threshold, nms_threshold, top_k)
            else:
                dets = detect(first, second, self.priors, score_threshold, nms_threshold, top_k, variances=self.variances)
            out += scale_detections(dets, [tuple(image.shape[-2:]) for image in chunk])
        return out

    def evaluate(self, dataset, batch_size: int = 32, limit: int | None = None, use_07_metric: bool = True) -> dict:
        """VOC mAP@0.5 on ``dataset`` (items without transform), as :func:`ssd_lib.evaluate.evaluate_model`."""
        n = len(dataset) if limit is None else min(limit, len(dataset))
        detections, truths = [], []
        for start in range(0, n, batch_size):
            items = [dataset[i] for i in range(start, min(start + batch_size, n))]
            detections += self.predict([image for image, _ in items], batch_size=batch_size)
            truths += [target for _, target in items]
        names = list(getattr(dataset, "classes", [])) or None
        result = evaluate_voc(detections, truths, use_07_metric=use_07_metric, class_names=names,
                              num_classes=len(names) if names else None)
        result["detections"], result["ground_truths"] = detections, truths
        return result

    def __repr__(self) -> str:
        kind = "boxes, scores" if self.decoded else "loc, logits"
        return (f"OnnxDetector({str(self.path)!r}: images (batch, 3, {self.image_size}, {self.image_size}) -> {kind}; "
                f"{len(self.priors)} default boxes, {self.num_classes} classes with background)")


# ---------------------------------------------------------------- do two paths agree?


def match_detections(det_a: dict[str, Tensor], det_b: dict[str, Tensor], size: tuple[int, int],
                     box_tol: float = 1e-3, score_tol: float = 1e-4) -> dict[str, Any]:
    """Pair the detections of one image from two paths, whatever their order.

    Two detections pair up when they have the same label, scores within ``score_tol`` and every box
    corner within ``box_tol`` of the image size (x by the width, y by the height; ``size = (H, W)``).
    Greedy in the order of ``det_a`` (not hot: at most a few hundred detections). Returns ``pairs``
    (list of (i, j)), ``only_a``, ``only_b`` (unpaired indices), and over the pairs ``max_box_error``
    (fraction of the image size) and ``max_score_error``.
    """
    height, width = size
    scale = torch.tensor([width, height, width, height], dtype=torch.float64)
    boxes_a, boxes_b = det_a["boxes"].detach().cpu().double() / scale, det_b["boxes"].detach().cpu().double() / scale
    scores_a, scores_b = det_a["scores"].detach().cpu().double(), det_b["scores"].detach().cpu().double()
    labels_a, labels_b = det_a["labels"].detach().cpu(), det_b["labels"].detach().cpu()
    box_error = (boxes_a[:, None, :] - boxes_b[None, :, :]).abs().amax(dim=-1) if len(boxes_b) else \
        torch.zeros(len(boxes_a), 0, dtype=torch.float64)  # (A, B)
    score_error = (scores_a[:, None] - scores_b[None, :]).abs()
    close = (labels_a[:, None] == labels_b[None, :]) & (box_error <= box_tol) & (score_error <= score_tol)
    pairs, taken = [], torch.zeros(len(boxes_b), dtype=torch.bool)
    for i in range(len(boxes_a)):
        candidates = torch.nonzero(close[i] & ~taken).flatten()
        if len(candidates):
            j = int(candidates[box_error[i, candidates].argmin()])
            taken[j] = True
            pairs.append((i, j))
    paired_a = {i for i, _ in pairs}
    return {
        "pairs": pairs,
        "only_a": [i for i in range(len(boxes_a)) if i not in paired_a],
        "only_b": torch.nonzero(~taken).flatten().tolist(),
        "max_box_error": max((float(box_error[i, j]) for i, j in pairs), default=0.0),
        "max_score_error": max((float(score_error[i, j]) for i, j in pairs), default=0.0),
    }


def same_detections(det_a: dict[str, Tensor], det_b: dict[str, Tensor], size: tuple[int, int],
                    box_tol: float = 1e-3, score_tol: float = 1e-4) -> bool:
    """True when the detections of one image agree one to one (see :func:`match_detections`); the
    order does not matter (two nearly equal scores may come out in either order)."""
    if len(det_a["scores"]) != len(det_b["scores"]):
        return False
    matched = match_detections(det_a, det_b, size, box_tol, score_tol)
    return not matched["only_a"] and not matched["only_b"]


def compare_detections(dets_a: Sequence[dict], dets_b: Sequence[dict], sizes: Sequence[tuple[int, int]],
                       box_tol: float = 1e-3, score_tol: float = 1e-4) -> dict[str, Any]:
    """:func:`match_detections` over many images: ``images``, ``detections_a``/``_b``, ``unmatched``
    (detections without a partner, both sides), ``images_differing`` (indices), ``max_box_error``,
    ``max_score_error``, and ``same`` (every image agrees)."""
    if not len(dets_a) == len(dets_b) == len(sizes):
        raise ValueError(f"got {len(dets_a)} and {len(dets_b)} detection lists for {len(sizes)} images")
    differing, unmatched, box_err, score_err = [], 0, 0.0, 0.0
    for index, (a, b, size) in enumerate(zip(dets_a, dets_b, sizes)):
        matched = match_detections(a, b, size, box_tol, score_tol)
        if matched["only_a"] or matched["only_b"]:
            differing.append(index)
        unmatched += len(matched["only_a"]) + len(matched["only_b"])
        box_err, score_err = max(box_err, matched["max_box_error"]), max(score_err, matched["max_score_error"])
    return {"images": len(sizes), "detections_a": sum(len(d["scores"]) for d in dets_a),
            "detections_b": sum(len(d["scores"]) for d in dets_b), "unmatched": unmatched,
            "images_differing": differing, "max_box_error": box_err, "max_score_error": score_err,
            "same": not differing}


def images_per_second(run: Callable[[], Any], batch_size: int, repeats: int = 5, warmup: int = 1,
                      clock: Callable[[], float] = time.perf_counter) -> float:
    """Throughput of ``run()`` (which processes one batch of ``batch_size`` images): ``warmup`` untimed
    calls, then the median of ``repeats`` timed ones (the median shrugs off a neighbour's burst).
    ``clock=time.process_time`` counts this process's CPU seconds instead of wall-clock seconds: on a
    shared machine a neighbour delays a long call more than a short one, while CPU time is the work done."""
    for _ in range(warmup):
        run()
    seconds = []
    for _ in range(repeats):
        start = clock()
        run()
        seconds.append(clock() - start)
    return batch_size / max(statistics.median(seconds), 1e-9)
