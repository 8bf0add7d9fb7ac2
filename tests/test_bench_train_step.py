"""benchmarks/bench_train_step.py: the old step's dataset draws what today's draws, and a tiny run reports both."""
import math

import torch

from benchmarks import bench_train_step as bench
from ssd_lib.data import ShapesDataset


def test_the_old_step_trains_on_the_same_images_and_boxes():
    old, new = bench.OldShapesDataset("train", size=4), ShapesDataset("train", size=4)
    for i in range(4):
        (a, ta), (b, tb) = old[i], new[i]
        assert torch.equal(a, b)
        assert torch.equal(ta["boxes"], tb["boxes"]) and torch.equal(ta["labels"], tb["labels"])


def test_a_tiny_run_reports_both_steps_and_their_ratio():
    result = bench.run(steps=1, repeats=1, batch_size=2)
    assert set(result["images_per_s"]) == {"old", "new"}
    assert all(v > 0 and math.isfinite(v) for v in result["images_per_s"].values())
    assert math.isclose(result["ratio"], result["images_per_s"]["new"] / result["images_per_s"]["old"])
    table = bench.format_table(result)
    assert "new/old" in table and "old" in table


def test_bad_arguments_get_a_clear_error(capsys):
    assert bench.main(["--steps", "0"]) == 2
    assert "must be >= 1" in capsys.readouterr().err
