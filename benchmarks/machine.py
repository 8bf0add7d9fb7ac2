"""The benchmark's machine description lives in the library (``ssd_lib.machine``), shared with the
model card and the ablation runner."""
from ssd_lib.machine import cpu_model, describe, is_loaded, load_average, machine_info

__all__ = ["cpu_model", "load_average", "machine_info", "is_loaded", "describe"]
