"""The benchmarks' own rules: run labels as RESULTS.md explains them, and like-for-like comparisons."""
from __future__ import annotations

from pathlib import Path

from benchmarks.report import smoke_label

RESULTS_MD = Path(__file__).resolve().parents[1] / "benchmarks" / "RESULTS.md"


def _result(quick: bool, loaded: bool, threads: int = 1) -> dict:
    machine = {"load_average_start": [3.1], "load_average_end": [2.9], "cpu_cores": 2, "torch_threads": threads}
    return {"machine": machine, "settings": {"quick": quick}, "loaded": loaded}


def test_each_kind_of_run_gets_its_label_and_the_results_file_uses_the_same_words():
    assert smoke_label(_result(quick=False, loaded=False)) is None
    quick = smoke_label(_result(quick=True, loaded=True))
    loaded = smoke_label(_result(quick=False, loaded=True, threads=2))
    assert quick.startswith("SMOKE RUN: --quick") and "loaded machine (load average 3.1" in quick
    assert loaded.startswith("LOADED MACHINE (load average 3.1 at start, 2.9 at end, on 2 cores; torch threads: 2)")
    assert "prefer a one-thread run" in loaded
    text = RESULTS_MD.read_text()
    for label in ("SMOKE RUN", "LOADED MACHINE"):
        assert f"**{label}**" in text, f"RESULTS.md does not explain the {label} label"


def test_case_5_compares_pipelines_whose_deterministic_steps_agree():
    from benchmarks.bench_augment import deterministic_agreement, synthetic_samples

    agree = deterministic_agreement(synthetic_samples(3), size=300, n=3)
    assert agree["images_compared"] == 3
    assert agree["max_abs_image_diff"] <= 1e-5 and agree["max_abs_box_diff"] <= 1e-4, agree
