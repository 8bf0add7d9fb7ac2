"""Benchmarks of ssd_lib against torchvision's own SSD, on identical inputs, with a correctness check per case.

One command runs them all and records the figures (see ``benchmarks/RESULTS.md``)::

    python -m benchmarks.run --quick --cases 1,2        # a smoke run: tiny repeats
    python -m benchmarks.run                            # the full CPU suite
    python -m benchmarks.run --device cuda --profile    # GPU: bf16 autocast + channels_last

Modules: ``timing`` (repeats, median/min, profiler), ``machine`` (what ran it), ``inputs`` (seeded
random data), ``torchvision_side`` (torchvision's SSD set up like ours), ``checks`` (same results?),
``row`` (one line of the table), ``case_*`` (the cases), ``report`` (table, JSON, markdown), ``run``.
"""
