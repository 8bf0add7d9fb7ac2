"""The library's CUDA paths against its CPU paths (marker ``gpu``; every test is skipped without CUDA).

Each test runs one library function on the GPU and on the CPU with the same inputs and compares:

- the trainer's step under bf16 autocast + channels_last on CUDA against its float32 CPU step (same
  initial weights, same seeded batch): the loss, and the parameter updates of a plain SGD step
  (the tolerances, and what they measured on the CPU, are stated at ``LOSS_RTOL``);
- ``detect`` on CUDA against ``detect`` on the CPU;
- the padded ``match_batch`` (one IoU call for the batch, the GPU path) against the per-image ``match``;
- ``--compile`` (``TrainConfig(compile=True)``) trains and computes the eager model's loss;
- DistributedDataParallel with NCCL at world size 1 takes the plain model's step;
- data loaders with pinned memory and worker processes give the single-process loader's batches.

Run by step 1 of ``python -m benchmarks.gpu_suite OUT`` on a GPU machine, or ``pytest -m gpu``.
The compile test is last: it is the slowest (inductor compiles the model on its first step).
"""
from __future__ import annotations

import copy

import pytest
import torch

from benchmarks.inputs import random_ground_truth, random_head_outputs
from ssd_lib.augment import SSDAugmentation
from ssd_lib.boxes import encode
from ssd_lib.data import ShapesDataset, collate
from ssd_lib.detect import detect
from ssd_lib.loss import MultiBoxLoss
from ssd_lib.matching import match, match_batch
from ssd_lib.model import ModelConfig, build_model
from ssd_lib.priors import PriorConfig, default_boxes
from ssd_lib.train import EpochSampler, SeededAugmented, TrainConfig, batch_targets, train

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

CUDA = torch.device("cuda")
SIZE = 64  # the small model at 64 px: maps 8, 4, 2, 1, 1 (the course's model, small enough for a fast test)
# bf16 keeps 8 bits of mantissa (relative rounding 2^-9). Measured without a GPU, bf16 autocast on the CPU
# against float32 on the CPU, one step of this test: the loss differs by 0.03%, the predictors' updates by
# 0.6-3%, while the first convolution's update differs by 27% (batch norm subtracts the batch mean of its
# gradient, which cancels most of it and leaves the bf16 rounding): all the updates together point the same
# way (cosine 0.978). The bounds leave room for CUDA's own kernels; a wrong layout or dtype breaks all three.
LOSS_RTOL = 2e-2
HEAD_RTOL = 0.1
MIN_COSINE = 0.9


def _small_model(seed: int = 0):
    torch.manual_seed(seed)
    return build_model(ModelConfig.small(7, image_size=SIZE))


def _train_config(**overrides) -> TrainConfig:
    """Plain SGD without warm-up, momentum or clipping: the first update is -lr * (gradient + weight decay),
    so comparing updates compares gradients."""
    base = dict(optimizer="sgd", lr=1e-2, momentum=0.0, warmup_steps=0, grad_clip=None, epochs=1, batch_size=8,
                max_steps_per_epoch=1, num_workers=0, log_every=1, eval_every=0)
    return TrainConfig.small_cpu(**{**base, **overrides})


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


def test_bf16_channels_last_step_on_cuda_matches_the_float32_cpu_step():
    model = _small_model()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    data = ShapesDataset("train", size=8, image_size=SIZE)
    steps = {}
    for name, overrides in {"cpu": dict(device="cpu", amp=False, channels_last=False),
                            "cuda": dict(device="cuda", amp=True, channels_last=True)}.items():
        result = train(copy.deepcopy(model), data, config=_train_config(**overrides), progress=False)
        steps[name] = (result.steps[0]["loss"],
                       {n: p.detach().float().cpu() - before[n] for n, p in result.model.named_parameters()})
    (cpu_loss, cpu_update), (cuda_loss, cuda_update) = steps["cpu"], steps["cuda"]
    assert abs(cuda_loss - cpu_loss) <= LOSS_RTOL * cpu_loss, f"loss: CUDA bf16 {cuda_loss:.5f}, CPU {cpu_loss:.5f}"
    flat = {name: torch.cat([u.flatten() for u in update.values()]) for name, (_, update) in steps.items()}
    assert flat["cpu"].norm() > 0, "the CPU step changed no parameter"
    cosine = float(torch.nn.functional.cosine_similarity(flat["cuda"], flat["cpu"], dim=0))
    assert cosine >= MIN_COSINE, f"the CUDA bf16 update points elsewhere: cosine {cosine:.3f} with the CPU's"
    for name in ("loc_heads.0.weight", "conf_heads.0.weight", "loc_heads.1.weight", "conf_heads.1.weight"):
        assert cpu_update[name].norm() > 0, name
        error = _relative(cuda_update[name], cpu_update[name])
        assert error <= HEAD_RTOL, f"{name}: the CUDA bf16 update differs from the CPU's by {error:.1%}"


def _assert_same_detections(cpu: dict, gpu: dict, where: str) -> None:
    """The same detections, in any order among equal scores: each CPU detection has its own CUDA one with the
    same label, the score within 1e-6 and the box within 1e-5 (boxes in [0, 1])."""
    gpu = {k: v.cpu() for k, v in gpu.items()}
    n = cpu["scores"].numel()
    assert gpu["scores"].numel() == n, f"{where}: {gpu['scores'].numel()} detections on CUDA, {n} on the CPU"
    assert bool((gpu["scores"][1:] <= gpu["scores"][:-1]).all()), f"{where}: CUDA detections not sorted by score"
    used = torch.zeros(n, dtype=torch.bool)
    for i in range(n):
        same = (~used & (gpu["labels"] == cpu["labels"][i]) & ((gpu["scores"] - cpu["scores"][i]).abs() <= 1e-6)
                & ((gpu["boxes"] - cpu["boxes"][i]).abs().amax(dim=1) <= 1e-5))
        label, score = int(cpu["labels"][i]), float(cpu["scores"][i])
        assert bool(same.any()), f"{where}: CPU detection {i} (label {label}, score {score:.6f}) is not on CUDA"
        used[int(same.nonzero()[0])] = True


# Background offset 0: an untrained network, 200 detections per image (the top-k cut); 14: 65-85 per image.
@pytest.mark.parametrize("background_offset", [0.0, 14.0])
def test_detect_on_cuda_gives_the_cpu_detections(background_offset):
    priors = default_boxes(PriorConfig.ssd300())
    loc, logits = random_head_outputs(4, priors.shape[0], 21, seed=3, background_offset=background_offset)
    cpu = detect(loc, logits, priors)
    gpu = detect(loc.to(CUDA), logits.to(CUDA), priors.to(CUDA))
    assert sum(d["scores"].numel() for d in cpu) > 0
    for image, (a, b) in enumerate(zip(cpu, gpu)):
        _assert_same_detections(a, b, f"image {image}")


def test_padded_match_batch_on_cuda_equals_per_image_match_on_cpu():
    priors = default_boxes(PriorConfig.ssd300())
    gt = random_ground_truth(12, seed=5)
    boxes, labels = list(gt.boxes), list(gt.labels)
    boxes[3], labels[3] = torch.zeros(0, 4), torch.zeros(0, dtype=torch.long)  # no objects: all padding
    boxes[4], labels[4] = torch.cat([boxes[4], boxes[4][:1]]), torch.cat([labels[4], labels[4][:1]])  # a duplicate
    loc_gpu, labels_gpu = match_batch([b.to(CUDA) for b in boxes], [l.to(CUDA) for l in labels], priors.to(CUDA))
    for i, (b, l) in enumerate(zip(boxes, labels)):
        matched, expected_labels = match(b, l, priors)
        expected_loc = torch.where((expected_labels > 0).unsqueeze(-1), encode(matched, priors), 0.0)
        assert torch.equal(labels_gpu[i].cpu(), expected_labels), f"image {i}: labels differ"
        torch.testing.assert_close(loc_gpu[i].cpu(), expected_loc, atol=1e-5, rtol=1e-5, msg=f"image {i}")
    assert int((labels_gpu > 0).sum()) > 0


def test_ddp_with_nccl_at_world_size_1_takes_the_plain_step(tmp_path):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    if not dist.is_available() or not dist.is_nccl_available():
        pytest.skip("this CUDA build of torch has no NCCL")
    images, targets = collate([ShapesDataset("train", size=4, image_size=SIZE)[i] for i in range(4)])
    plain = _small_model().to(CUDA)
    wrapped_base = copy.deepcopy(plain)
    dist.init_process_group("nccl", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        wrapped = DistributedDataParallel(wrapped_base, device_ids=[CUDA.index or 0])
        losses = []
        for model, base in ((wrapped, wrapped_base), (plain, plain)):
            loc_t, labels = batch_targets(targets, images.shape[-2:], base.priors, base.num_classes)
            loc, logits = model(images.to(CUDA))
            parts = MultiBoxLoss()(loc, logits, loc_t, labels)
            parts.total.backward()
            losses.append(float(parts.total.detach()))
    finally:
        dist.destroy_process_group()
    assert all(torch.isfinite(torch.tensor(losses)))
    assert abs(losses[0] - losses[1]) <= 1e-5 * abs(losses[1])
    grads = [torch.cat([p.grad.flatten() for p in m.parameters()]) for m in (wrapped_base, plain)]
    assert _relative(grads[0], grads[1]) <= 1e-4  # all-reduce over one rank: the plain gradients


def test_loaders_with_pinned_memory_and_workers_give_the_same_batches():
    data = SeededAugmented(ShapesDataset("train", size=12, image_size=SIZE), SSDAugmentation(size=SIZE), seed=0)

    def batches(workers: int, pin: bool) -> list:
        loader = torch.utils.data.DataLoader(data, batch_size=4, sampler=EpochSampler(len(data), seed=0),
                                             collate_fn=collate, num_workers=workers, pin_memory=pin)
        return list(loader)

    for (images, targets), (expected, expected_targets) in zip(batches(2, True), batches(0, False), strict=True):
        assert images.is_pinned()
        assert torch.equal(images.to(CUDA, non_blocking=True).cpu(), expected)
        for t, e in zip(targets, expected_targets, strict=True):
            assert torch.equal(t["boxes"], e["boxes"]) and torch.equal(t["labels"], e["labels"])
    # The trainer's own loader on CUDA: pinned memory (device cuda) and two workers.
    result = train(_small_model(), ShapesDataset("train", size=16, image_size=SIZE),
                   config=_train_config(device="cuda", num_workers=2, max_steps_per_epoch=2), progress=False)
    assert len(result.steps) == 2 and all(torch.isfinite(torch.tensor([s["loss"] for s in result.steps])))


def test_compile_path_trains_and_computes_the_eager_loss():
    data = ShapesDataset("train", size=24, image_size=SIZE)
    runs = {}
    for compiled in (False, True):
        cfg = _train_config(device="cuda", compile=compiled, max_steps_per_epoch=3, momentum=0.9)
        runs[compiled] = [s["loss"] for s in train(_small_model(), data, config=cfg, progress=False).steps]
    eager, compiled = runs[False], runs[True]
    assert len(compiled) == 3 and all(torch.isfinite(torch.tensor(compiled)))
    # The same weights and batch: the first loss is the same function's, up to bf16 and fused kernels.
    assert abs(compiled[0] - eager[0]) <= LOSS_RTOL * eager[0], f"compiled {compiled[0]:.5f} vs eager {eager[0]:.5f}"
