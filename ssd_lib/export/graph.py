"""The network as an ONNX file: what is exported (``images -> loc, logits``, or with the decoding of
Sec. 2.2 in the graph ``images -> boxes, scores``), the preprocessing both runtimes share, the metadata
a deployer needs, and a summary of what a file holds (paper Sec. 2.1: SSD is one network plus a short
post-processing, which is what makes it easy to deploy).

Usage::

    from ssd_lib.export.graph import export_onnx, onnx_summary
    path = export_onnx(model, "ssd.onnx", class_names=classes)      # checked with onnx.checker
    onnx_summary(path)["outputs"]                                   # {"loc": ["batch", P, 4], "logits": ...}
"""
from __future__ import annotations

import importlib
import json
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ssd_lib.augment import IMAGENET_MEAN, IMAGENET_STD, SSDTransform
from ssd_lib.boxes import DEFAULT_VARIANCES, decode
from ssd_lib.detect import NMS_THRESHOLD, PRE_NMS_TOP_K, SCORE_THRESHOLD, TOP_K
from ssd_lib.files import atomic_write
from ssd_lib.model import SSD, ModelConfig

__all__ = ["DEPLOY_INSTALL", "MissingDeployExtra", "require_deploy", "INPUT_NAME", "RAW_OUTPUTS", "DECODED_OUTPUTS",
           "METADATA_FORMAT", "DEFAULT_OPSET", "DecodedSSD", "preprocess", "export_onnx", "onnx_summary"]

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

    What is left outside is the selection: threshold, per-class NMS, top-k (:func:`ssd_lib.detect.detect_decoded`).
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
            "score_threshold": SCORE_THRESHOLD, "nms_threshold": NMS_THRESHOLD, "top_k": TOP_K,
            "pre_nms_top_k": PRE_NMS_TOP_K,
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
