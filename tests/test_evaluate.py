"""ssd_lib.evaluate: one loop over a dataset for any predictor, the same result on every rank."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from ssd_lib.data import ShapesDataset
from ssd_lib.evaluate import evaluate_model, evaluate_predictor, predict
from ssd_lib.model import ModelConfig, build_model

REPO = Path(__file__).resolve().parents[1]


def _mean_score_predictor(images):
    """A deterministic stand-in for a detector: one box per image whose score is the image's mean."""
    return [{"boxes": torch.tensor([[0.0, 0.0, 32.0, 32.0]]), "scores": image.mean().reshape(1),
             "labels": torch.tensor([1])} for image in images]


def test_a_predictor_that_returns_the_ground_truth_scores_map_1():
    dataset = ShapesDataset("test", size=6, image_size=64)
    targets = {dataset[i][0].sum().item(): dataset[i][1] for i in range(len(dataset))}  # image -> its target

    def oracle(images):
        found = [targets[image.sum().item()] for image in images]
        return [{"boxes": t["boxes"], "labels": t["labels"], "scores": torch.ones(len(t["labels"]))} for t in found]

    result = evaluate_predictor(oracle, dataset, batch_size=4, return_detections=True)
    assert len(targets) == len(dataset) and result["mAP"] == 1.0
    assert [t["image_id"] for t in result["ground_truths"]] == list(range(len(dataset)))
    assert len(result["detections"]) == len(dataset)


def test_evaluate_model_is_evaluate_predictor_with_predict():
    torch.manual_seed(0)
    model = build_model(ModelConfig.small(len(ShapesDataset.classes) + 1)).eval()
    dataset = ShapesDataset("test", size=4, image_size=128)
    by_model = evaluate_model(model, dataset, batch_size=2, score_threshold=0.05, return_detections=True)
    by_loop = evaluate_predictor(lambda images: predict(model, images, score_threshold=0.05), dataset, batch_size=2,
                                 return_detections=True)
    np.testing.assert_equal(by_model["ap"], by_loop["ap"])
    for a, b in zip(by_model["detections"], by_loop["detections"]):
        assert all(torch.equal(a[key], b[key]) for key in ("boxes", "scores", "labels"))


def test_limit_and_batch_size_do_not_change_the_order():
    dataset = ShapesDataset("test", size=7, image_size=64)
    whole = evaluate_predictor(_mean_score_predictor, dataset, batch_size=3, limit=5, return_detections=True)
    assert [t["image_id"] for t in whole["ground_truths"]] == [0, 1, 2, 3, 4]
    expected = [float(dataset[i][0].mean()) for i in range(5)]
    assert [float(d["scores"][0]) for d in whole["detections"]] == expected


_WORKER = """
import json, sys, torch, torch.distributed as dist
sys.path.insert(0, {repo!r})
from ssd_lib.data import ShapesDataset
from ssd_lib.evaluate import evaluate_predictor

def _mean_score_predictor(images):  # as in the test module
    return [{{"boxes": torch.tensor([[0.0, 0.0, 32.0, 32.0]]), "scores": image.mean().reshape(1),
             "labels": torch.tensor([1])}} for image in images]

rank = int(sys.argv[1])
dist.init_process_group("gloo", init_method="tcp://127.0.0.1:{port}", rank=rank, world_size=2)
result = evaluate_predictor(_mean_score_predictor, ShapesDataset("test", size=7, image_size=64), batch_size=2,
                            distributed=True, return_detections=True)
dist.destroy_process_group()
print(json.dumps({{"ap": result["ap"], "ids": [t["image_id"] for t in result["ground_truths"]],
                  "scores": [float(d["scores"][0]) for d in result["detections"]]}}))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason="needs torch.distributed with gloo")
def test_distributed_every_rank_returns_the_complete_result(tmp_path):
    """Two gloo ranks, 7 images split 4 / 3: both return the result of one process over all 7."""
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(_WORKER.format(repo=str(REPO), port=_free_port())))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    ranks = [subprocess.Popen([sys.executable, str(script), str(rank)], cwd=REPO, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for rank in (0, 1)]
    outputs = []
    for process in ranks:
        stdout, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr[-2000:]
        outputs.append(json.loads(stdout.strip().splitlines()[-1]))
    single = evaluate_predictor(_mean_score_predictor, ShapesDataset("test", size=7, image_size=64), batch_size=2,
                                return_detections=True)
    expected = {"ap": single["ap"], "ids": list(range(7)),
                "scores": [float(d["scores"][0]) for d in single["detections"]]}
    for output in outputs:
        np.testing.assert_equal(output, expected)
