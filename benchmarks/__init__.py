"""Benchmarks of ssd_lib against torchvision's own SSD, on identical inputs, with a correctness check per case.

One command runs them all and records the figures (see ``benchmarks/RESULTS.md``)::

    python -m benchmarks.run --quick --cases 1,2        # a smoke run: tiny repeats
    python -m benchmarks.run                            # the full CPU suite
    python -m benchmarks.run --device cuda --profile    # GPU: bf16 autocast + channels_last

Modules: ``timing`` (repeats, median/min, profiler), ``machine`` (what ran it), ``inputs`` (seeded
random data), ``torchvision_side`` (torchvision's SSD set up like ours), ``checks`` (same results?),
``row`` (one line of the table), ``case_*`` (the cases), ``report`` (table, JSON, markdown), ``run``.
Beside the suite: ``gpu_suite`` (the whole GPU half in one command, ``bash benchmarks/gpu_suite.sh OUT``, with
its CPU dry run in the tests), ``recipe_probes`` (the main job's recipe, one change at a time), ``bench_budgets``
(the time budgets the course relies on), ``breakdown``, ``bench_augment``, ``bench_metrics``.
"""
