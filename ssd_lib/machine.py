"""What a measurement ran on: CPU model, cores, load, library versions, threads, GPU, date.

Stored with every recorded figure (benchmarks, the shipped model's card, the ablation results).

Usage::

    info = machine_info(torch.device("cpu"))   # a dict, stored with every result
    print(describe(info))
"""
from __future__ import annotations

import datetime
import os
import platform
from pathlib import Path
from typing import Any

import torch
import torchvision

__all__ = ["cpu_model", "load_average", "machine_info", "is_loaded", "describe"]


def cpu_model() -> str:
    """The ``model name`` line of /proc/cpuinfo (Linux), else what ``platform`` knows."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def load_average() -> tuple[float, float, float]:
    """1, 5 and 15 minute load averages (zeros where the OS has none)."""
    try:
        return tuple(round(x, 2) for x in os.getloadavg())
    except OSError:
        return (0.0, 0.0, 0.0)


def machine_info(device: torch.device) -> dict[str, Any]:
    """What a measurement ran on (stored with every recorded figure): CPU, cores, threads, versions,
    platform, ``OMP_NUM_THREADS``, device (and GPU name), the date and the load average at the start."""
    info = {
        "cpu_model": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "device": str(device),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "load_average_start": load_average(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def is_loaded(load: tuple[float, float, float], cores: int | None) -> bool:
    """True when the 1-minute load is above half the core count: timings then measure the neighbours too."""
    return load[0] > 0.5 * (cores or 1)


def describe(info: dict[str, Any]) -> str:
    gpu = f", GPU {info['gpu']}" if "gpu" in info else ""
    end = info.get("load_average_end")
    load = f"load average {info['load_average_start']} at start" + (f", {end} at end" if end else "")
    return (f"{info['cpu_model']}, {info['cpu_cores']} cores, torch threads: {info['torch_threads']}{gpu}; "
            f"torch {info['torch']}, torchvision {info['torchvision']}; {info['date']}; {load}")
