"""int8 versions of an exported SSD with ONNX Runtime's quantisation tools: static (weights and
activations, calibrated on training images) or dynamic (weights only), the metadata kept (lesson 12;
the paper's speed numbers, Sec. 3.7, are fp32 on a GPU).

Usage::

    from ssd_lib.export.quantize import quantize_onnx
    quantize_onnx("ssd.onnx", "ssd.int8.onnx", calibration_images=train_images[:100])
    OnnxDetector("ssd.int8.onnx").predict(images)       # close to fp32, not equal
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from torch import Tensor

from ssd_lib.files import atomic_write

from .graph import INPUT_NAME, preprocess, require_deploy

__all__ = ["quantize_onnx"]


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
