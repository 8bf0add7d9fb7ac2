"""Case 8: the deployed network, ONNX Runtime fp32 and int8, against PyTorch eager on the same inputs.

For the course's small model (the shipped weights when ``assets/ssd_small_shapes.pt`` exists, else
seeded random weights) and for SSD300 (random weights: speed does not depend on them), the network is
exported with :func:`ssd_lib.export.export_onnx` and quantised to int8 with
:func:`ssd_lib.export.quantize_onnx` (static: QDQ, per-channel weights, calibrated on a few inputs).
Each row times the forward pass only (``loc, logits`` from a normalised batch; the post-processing
is the same ``ssd_lib.detect`` call on every path), at batch 1 and 8. The three sides (eager, fp32,
int8) are timed interleaved in the same run, the order rotating every repeat, and both rows of a
batch share the eager timings. In the table "ours" is ONNX Runtime and "torchvision" is **PyTorch eager of
the same model**: speed-up = eager time / ONNX Runtime time. ONNX Runtime gets as many intra-op
threads as torch (``torch.get_num_threads()``).

Check: fp32 raw outputs equal PyTorch's to 1e-4 (MISMATCH otherwise); int8 is an approximation, so
its row reports how far its class probabilities move (mean and max) and fails only on NaN.

Usage::

    rows = run(Settings(torch.device("cpu"), quick=True))
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from ssd_lib.export import OnnxDetector, export_onnx, quantize_onnx

from .checks import Mismatch, check_close
from .inputs import random_images
from .row import Row, Settings, run_check
from .timing import Timing, time_call

__all__ = ["run", "models"]

BATCHES = (1, 8)
CALIBRATION_IMAGES = 16


def models(seed: int = 0) -> dict[str, tuple[torch.nn.Module, str]]:
    """{name: (model in eval mode, where its weights come from)}."""
    from ssd_lib.checkpoint import SHIPPED_MODEL, model_from_checkpoint
    from ssd_lib.model import ssd300_vgg16, ssd_small

    if SHIPPED_MODEL.is_file():
        small, source = model_from_checkpoint(SHIPPED_MODEL)[0].eval(), f"shipped weights ({SHIPPED_MODEL.name})"
    else:
        torch.manual_seed(seed)
        small, source = ssd_small(7).eval(), "random weights (no shipped model)"
    torch.manual_seed(seed)
    return {"small 128px": (small, source), "SSD300": (ssd300_vgg16(21).eval(), "random weights")}


def _repeats(quick: bool, batch: int, name: str) -> tuple[int, int]:
    """(extra warm-up calls, timed repeats) per side; the check has already called each side once."""
    if quick:
        return (0, 3) if name.startswith("small") else (0, 1)
    return (1, 10) if name.startswith("small") else ((1, 5) if batch == 1 else (1, 3))


def measure_rotating(fns: dict, device: torch.device, warmup: int, repeats: int) -> dict[str, Timing]:
    """Like ``timing.measure_pair`` for any number of sides: every repeat calls each side once, the
    starting side rotating, so a burst of load from a neighbour hits all sides alike."""
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    timings = {name: Timing() for name in names}
    for repeat in range(repeats):
        for name in names[repeat % len(names):] + names[:repeat % len(names)]:
            timings[name].add(*time_call(fns[name], device))
    return timings


def _int8_check(fp32_logits: torch.Tensor, int8_logits: torch.Tensor) -> str:
    gap = (int8_logits.softmax(-1) - fp32_logits.softmax(-1)).abs()
    if not torch.isfinite(gap).all():
        raise Mismatch("int8 outputs contain NaN or infinity")
    return f"int8 approximates fp32: class probabilities move by {gap.mean():.1e} on average, {gap.max():.2f} at most"


def run(settings: Settings) -> list[Row]:
    if settings.device.type != "cpu":
        raise RuntimeError("case 8 measures ONNX Runtime's CPU provider; run it with --device cpu")
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="ssd_onnx_bench_") as tmp:
        for name, (model, source) in models(settings.seed).items():
            size = model.prior_config.image_size
            fp32_path = export_onnx(model, Path(tmp) / f"{name.split()[0]}.onnx")
            calibration = list(random_images(CALIBRATION_IMAGES, size, seed=settings.seed + 5))
            int8_path = quantize_onnx(fp32_path, Path(tmp) / f"{name.split()[0]}.int8.onnx", calibration)
            runtimes = {"fp32": OnnxDetector(fp32_path), "int8": OnnxDetector(int8_path)}
            sizes_mb = {k: p.stat().st_size / 2**20 for k, p in (("fp32", fp32_path), ("int8", int8_path))}
            for batch in BATCHES:
                # Normalised images, as preprocess() would give: what both runtimes are fed.
                images = (random_images(batch, size, seed=settings.seed + 2) - 0.45) / 0.225

                def eager():
                    with torch.inference_mode():
                        model(images)

                with torch.inference_mode():
                    loc, logits = model(images)
                checks = {}
                for kind, detector in runtimes.items():
                    ort_loc, ort_logits = detector.run(images)
                    if kind == "fp32":
                        checks[kind] = run_check(lambda: check_close("loc", ort_loc, loc, atol=1e-4, rtol=1e-4) + "; "
                                                 + check_close("logits", ort_logits, logits, atol=1e-4, rtol=1e-4))
                    else:
                        checks[kind] = run_check(lambda: _int8_check(logits, ort_logits))
                warmup, repeats = _repeats(settings.quick, batch, name)
                timings = measure_rotating({"eager": eager, "fp32": lambda: runtimes["fp32"].run(images),
                                            "int8": lambda: runtimes["int8"].run(images)},
                                           settings.device, warmup, repeats)
                for kind in runtimes:
                    ort_t, eager_t = timings[kind], timings["eager"]
                    row = Row(f"8 ONNX Runtime {kind} vs PyTorch eager, {name} forward (B={batch})", ort_t, eager_t,
                              check=checks[kind])
                    rates = {"onnxruntime": batch / ort_t.median(), "pytorch_eager": batch / eager_t.median()}
                    row.extra = {"images_per_s": rates, "file_mb": sizes_mb[kind], "weights": source}
                    row.notes.append(f"ONNX Runtime {kind} {rates['onnxruntime']:.1f} img/s, PyTorch eager "
                                     f"{rates['pytorch_eager']:.1f} img/s ('torchvision' column = PyTorch eager); "
                                     f"file {sizes_mb[kind]:.1f} MB; {source}")
                    rows.append(row)
    return rows
