"""Case 7: achieved GFLOP/s of our SSD300 forward against a large float32 matmul on the same machine.

The forward's FLOPs are counted once with ``torch.utils.flop_counter.FlopCounterMode`` (convolutions
and matmuls, 2 FLOPs per multiply-add); the matmul is 2048x2048 @ 2048x2048 (2 * 2048^3 FLOPs). Both
are timed in the same run, so the ratio says how close the network's convolutions come to what
this machine's BLAS reaches. With ``amp`` the forward and the matmul run in bf16.

Usage::

    rows = run(Settings(torch.device("cpu"), quick=True))
"""
from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from ssd_lib.model import ssd300_vgg16

from .inputs import random_images
from .row import Row, Settings
from .timing import measure

__all__ = ["run", "count_flops", "MATMUL_SIZE"]

MATMUL_SIZE = 2048


def count_flops(model: torch.nn.Module, images: torch.Tensor) -> int:
    """FLOPs of one forward of ``model`` on ``images`` (counted, not timed)."""
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(images)
    return counter.get_total_flops()


def run(settings: Settings) -> list[Row]:
    device = settings.device
    batch = 1 if settings.quick else 8
    model = ssd300_vgg16(21).eval().to(device, memory_format=settings.memory_format)
    images = random_images(batch, 300, seed=settings.seed + 2).to(device).contiguous(memory_format=settings.memory_format)
    flops = count_flops(model, images)
    dtype = torch.bfloat16 if settings.amp else torch.float32
    generator = torch.Generator().manual_seed(settings.seed)
    a, b = (torch.randn(MATMUL_SIZE, MATMUL_SIZE, generator=generator).to(device, dtype) for _ in range(2))

    def forward():
        with torch.inference_mode(), settings.autocast():
            model(images)

    warmup, repeats = (1, 2) if settings.quick else (1, 5)
    forward_t = measure(forward, device, warmup, repeats)
    matmul_t = measure(lambda: a @ b, device, 1, 3 if settings.quick else 10)
    matmul_flops = 2 * MATMUL_SIZE**3
    forward_gflops, matmul_gflops = flops / forward_t.median() / 1e9, matmul_flops / matmul_t.median() / 1e9
    # Per CPU-second (all threads): robust to neighbours on a shared machine, and per core rather than per machine.
    forward_cpu = flops / forward_t.median("total:cpu") / 1e9
    matmul_cpu = matmul_flops / matmul_t.median("total:cpu") / 1e9
    row = Row(f"7 SSD300 forward GFLOP/s (B={batch}) vs {MATMUL_SIZE}^3 matmul", forward_t, None, unit="ms",
              check="ok: FLOPs counted by FlopCounterMode")
    row.extra = {"forward_gflop_per_image": flops / batch / 1e9, "forward_gflops": forward_gflops,
                 "matmul_gflops": matmul_gflops, "ratio": forward_gflops / matmul_gflops,
                 "forward_gflop_per_cpu_s": forward_cpu, "matmul_gflop_per_cpu_s": matmul_cpu,
                 "matmul": matmul_t.to_dict(), "dtype": str(dtype)}
    row.notes.append(f"forward {flops / batch / 1e9:.1f} GFLOP/image at {forward_gflops:.1f} GFLOP/s; "
                     f"matmul {matmul_gflops:.1f} GFLOP/s ({str(dtype).replace('torch.', '')}); "
                     f"forward reaches {100 * forward_gflops / matmul_gflops:.0f}% of the matmul")
    row.notes.append(f"per CPU-second (all threads): forward {forward_cpu:.1f}, matmul {matmul_cpu:.1f} GFLOP "
                     f"({100 * forward_cpu / matmul_cpu:.0f}%)")
    return [row]
