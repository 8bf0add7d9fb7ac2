"""Training SSD (paper Sec. 3, "Experimental results": SGD, lr 1e-3, momentum 0.9, weight decay
5e-4, batch 32), as one plain function: no framework, every step visible.

Each step builds the targets for the whole batch at once with :func:`ssd_lib.matching.match_batch`
on the model's device, computes :class:`ssd_lib.loss.MultiBoxLoss`, and takes an SGD step with
linear warm-up and multi-step or cosine decay. Checkpoints are written atomically and ``resume``
continues exactly where a run stopped (the data order and every augmentation are seeded by
(seed, epoch, index), so they do not depend on workers or on where the run was interrupted).
The same function runs under ``torchrun`` with DistributedDataParallel.

The package, read in this order: ``config`` (TrainConfig, the device, the lr schedule), ``batches``
(seeded data order and augmentation; the one check of a batch), ``loop`` (:func:`train` and its pieces).

Usage::

    from ssd_lib.train import TrainConfig, train
    result = train(model, ShapesDataset("train"), ShapesDataset("val"), TrainConfig.small_cpu(), out_dir="runs/demo")
    print(result.history[-1])
"""
from .batches import EpochSampler, SeededAugmented, batch_targets, check_targets, library_targets, normalized_targets
from .config import TrainConfig, lr_factor, native_bf16, pick_device
from .loop import MAX_SKIPPED_STEPS, NonFiniteLossError, TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "train", "NonFiniteLossError", "MAX_SKIPPED_STEPS", "pick_device",
           "native_bf16", "lr_factor", "normalized_targets", "check_targets", "batch_targets", "library_targets",
           "EpochSampler", "SeededAugmented"]
