"""An exported SSD run by ONNX Runtime, with the post-processing of :mod:`ssd_lib.detect` (paper Sec. 3:
score threshold, per-class NMS, top-k), so that it gives the detections PyTorch gives.

Usage::

    from ssd_lib.export.runtime import OnnxDetector
    detector = OnnxDetector("ssd.onnx")
    dets = detector.predict(images); mAP = detector.evaluate(ShapesDataset("test"))["mAP"]
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from ssd_lib.boxes import DEFAULT_VARIANCES, decode
from ssd_lib.detect import (NMS_THRESHOLD, PRE_NMS_TOP_K, SCORE_THRESHOLD, TOP_K, detect, detect_decoded,
                            scale_detections)
from ssd_lib.evaluate import evaluate_predictor
from ssd_lib.model import ModelConfig
from ssd_lib.priors import default_boxes

from .graph import DECODED_OUTPUTS, INPUT_NAME, RAW_OUTPUTS, preprocess, require_deploy

__all__ = ["OnnxDetector", "predict_with"]


def predict_with(run_network: Callable[[np.ndarray], Sequence[np.ndarray]], images: Sequence[Tensor],
                 priors_cxcywh: Tensor, image_size: int,
                 score_threshold: float = SCORE_THRESHOLD) -> list[dict[str, Tensor]]:
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
    Each method has one meaning: :meth:`run` the raw ``loc, logits``, :meth:`run_decoded` the decoded
    ``boxes, scores``, :meth:`predict` detections, :meth:`evaluate` the metrics.
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
        """The network's raw outputs for a preprocessed ``batch (B, 3, S, S)``: ``loc (B, P, 4)`` offsets
        and ``logits (B, P, C)``, float32 CPU tensors, what ``model(batch)`` returns in PyTorch.

        Only a file exported without decoding has them (``decoded`` False); one with decoding in the
        graph raises ``ValueError``: its outputs are boxes and scores, see :meth:`run_decoded`."""
        if self.decoded:
            raise ValueError(f"{self.path} decodes in the graph: its outputs are boxes and scores, not loc and "
                             "logits; call run_decoded(batch)")
        return self._session_outputs(batch)

    def run_decoded(self, batch: Tensor | np.ndarray) -> tuple[Tensor, Tensor]:
        """Decoded outputs for a preprocessed ``batch (B, 3, S, S)``, for any file: ``boxes (B, P, 4)`` xyxy
        clipped to [0, 1] and ``scores (B, P, C)`` softmax probabilities (column 0 = background), float32
        CPU tensors, what :class:`ssd_lib.export.DecodedSSD` returns. A file with decoding in the graph
        computes them itself; for the other, loc and logits are decoded here (Sec. 2.2, Eq. 2)."""
        first, second = self._session_outputs(batch)
        if self.decoded:
            return first, second
        return decode(first, self.priors, self.variances).clamp(0.0, 1.0), second.softmax(dim=-1)

    def _session_outputs(self, batch: Tensor | np.ndarray) -> tuple[Tensor, Tensor]:
        """The file's two outputs, whatever they are (``decoded`` says which): the one call into ONNX Runtime."""
        array = batch.detach().cpu().numpy() if isinstance(batch, Tensor) else np.asarray(batch)
        if array.ndim != 4 or array.shape[1:] != (3, self.image_size, self.image_size):
            raise ValueError(f"batch must have shape (B, 3, {self.image_size}, {self.image_size}); got "
                             f"{tuple(array.shape)} (use ssd_lib.export.preprocess)")
        first, second = self.session.run(None, {INPUT_NAME: np.ascontiguousarray(array, dtype=np.float32)})
        return torch.from_numpy(first), torch.from_numpy(second)

    def predict(self, images: Sequence[Tensor], score_threshold: float = SCORE_THRESHOLD,
                nms_threshold: float = NMS_THRESHOLD, top_k: int = TOP_K, batch_size: int = 32,
                pre_nms_top_k: int = PRE_NMS_TOP_K) -> list[dict[str, Tensor]]:
        """Detections in pixel xyxy of each original image (``images``: list of ``(3, H, W)`` in [0, 1]),
        the same format as :func:`ssd_lib.evaluate.predict`: ``boxes (D, 4)``, ``scores (D,)``, ``labels (D,)``."""
        out: list[dict[str, Tensor]] = []
        for start in range(0, len(images), batch_size):  # a loop over batches: bounded memory
            chunk = list(images[start:start + batch_size])
            batch = preprocess(chunk, self.image_size)
            if self.decoded:  # the selection only: the graph decoded
                boxes, scores = self.run_decoded(batch)
                dets = detect_decoded(boxes, scores, score_threshold, nms_threshold, top_k, pre_nms_top_k)
            else:  # detect decodes only the candidates
                loc, logits = self.run(batch)
                dets = detect(loc, logits, self.priors, score_threshold, nms_threshold, top_k, pre_nms_top_k,
                              variances=self.variances)
            out += scale_detections(dets, [tuple(image.shape[-2:]) for image in chunk])
        return out

    def evaluate(self, dataset, batch_size: int = 32, limit: int | None = None, use_07_metric: bool = True,
                 coco: bool = False) -> dict:
        """VOC mAP@0.5 (and COCO AP when ``coco``) on ``dataset`` (items without transform): the loop of
        :func:`ssd_lib.evaluate.evaluate_predictor` with :meth:`predict`, so the same result dict as
        :func:`ssd_lib.evaluate.evaluate_model`, with ``detections`` and ``ground_truths``."""
        def predict_batch(images: list[Tensor]) -> list[dict[str, Tensor]]:
            return self.predict(images, batch_size=batch_size)

        return evaluate_predictor(predict_batch, dataset, batch_size=batch_size, coco=coco, limit=limit,
                                  use_07_metric=use_07_metric, return_detections=True)

    def __repr__(self) -> str:
        kind = "boxes, scores" if self.decoded else "loc, logits"
        return (f"OnnxDetector({str(self.path)!r}: images (batch, 3, {self.image_size}, {self.image_size}) -> {kind}; "
                f"{len(self.priors)} default boxes, {self.num_classes} classes with background)")
