"""Training SSD (paper Sec. 3, "Experimental results": SGD, lr 1e-3, momentum 0.9, weight decay
5e-4, batch 32), as one plain function: no framework, every step visible.

Each step builds the targets for the whole batch at once with :func:`ssd_lib.matching.match_batch`
on the model's device, computes :class:`ssd_lib.loss.MultiBoxLoss`, and takes an SGD step with
linear warm-up and multi-step or cosine decay. Checkpoints are written atomically and ``resume``
continues exactly where a run stopped (the data order and every augmentation are seeded by
(seed, epoch, index), so they do not depend on workers or on where the run was interrupted).
The same function runs under ``torchrun`` with DistributedDataParallel.

Usage::

    from ssd_lib.train import TrainConfig, train
    result = train(model, ShapesDataset("train"), ShapesDataset("val"), TrainConfig.small_cpu(), out_dir="runs/demo")
    print(result.history[-1])
"""
from __future__ import annotations

import json
import math
import os
import random
import signal
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from .augment import SSDAugmentation
from .data import collate
from .evaluate import evaluate_model
from .checkpoint import load_checkpoint, save_checkpoint, set_rng_state, unwrap
from .files import atomic_write
from .loss import MultiBoxLoss
from .matching import match_batch
from .model import SSD, ModelConfig, build_model

__all__ = ["TrainConfig", "TrainResult", "train", "NonFiniteLossError", "pick_device", "plot_history",
           "normalized_targets", "check_targets", "lr_factor"]


MAX_SKIPPED_STEPS = 10  # consecutive updates skipped for non-finite bf16 gradients before a run stops


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is left untouched."""


@dataclass(frozen=True)
class TrainConfig:
    """How to train. ``milestones`` are fractions of the total steps where the lr drops by ``gamma``.

    ``amp`` (bf16 autocast): None means "on where the hardware computes bf16 natively" (a CUDA GPU
    that supports it, or a CPU with AVX512-BF16 or AMX; see :func:`native_bf16`).
    ``channels_last``: None means "on with CUDA or with amp" (the layout the fast kernels want).
    """

    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_steps: int = 500
    schedule: str = "multistep"  # or "cosine"
    milestones: tuple[float, ...] = (2 / 3, 5 / 6)  # released VOC07+12: 80k, 100k of 120k iterations
    gamma: float = 0.1
    grad_clip: float | None = None
    optimizer: str = "sgd"  # or "adamw" (the small CPU model converges faster with it)
    neg_pos_ratio: float = 3.0
    amp: bool | None = None
    channels_last: bool | None = None
    compile: bool = False
    num_workers: int = 2
    cpu_threads: int | None = None  # CPU compute threads (None: OMP_NUM_THREADS if set, else one core left per data worker)
    eval_every: int = 1  # epochs; 0 = never
    eval_batch_size: int = 64
    seed: int = 0
    device: str | None = None
    log_every: int = 10  # steps between metrics-log lines (each has the loss parts and the gradient norm)
    augment: dict = field(default_factory=dict)  # keyword arguments for SSDAugmentation
    max_steps_per_epoch: int | None = None  # for quick runs and tests

    @classmethod
    def released(cls, **overrides) -> "TrainConfig":
        """The released SSD300 VOC recipe (Sec. 3): SGD lr 1e-3, momentum 0.9, wd 5e-4, batch 32,
        lr / 10 at 2/3 and 5/6 of the run."""
        return replace(cls(lr=1e-3, momentum=0.9, weight_decay=5e-4, batch_size=32, schedule="multistep"), **overrides)

    @classmethod
    def small_cpu(cls, **overrides) -> "TrainConfig":
        """The course's small model on two CPU cores, on the built-in (unlimited) Shapes data.

        Measured choices (128 px, 1250 steps, one CPU thread; test VOC mAP@0.5): AdamW reached
        0.33 where SGD (lr 0.05) reached 0.04 after 313 steps; fresh images with flips only reached
        0.85 where the full SSD augmentation reached 0.74. Augmentation fights a *limited* dataset
        (VOC's 16k images); generated data is unlimited, so the preset draws new images instead.
        Data is made in the main process: on two idle cores, 2 compute threads with inline data
        ran at 132 images/s, against 100 with one loader worker (1 or 2 compute threads).
        On a CPU with native bf16 the step runs under bf16 autocast (``amp=None``): 1.6x less CPU
        time per step. The main job (2900 steps, with the stride-4 map) measured test mAP@0.5 0.9125 (README).
        """
        base = cls(epochs=1, batch_size=32, optimizer="adamw", lr=5e-3, momentum=0.9, weight_decay=5e-4,
                   warmup_steps=100, schedule="cosine", grad_clip=10.0, num_workers=0, eval_every=0,
                   augment={"photometric": False, "expand": False, "crop": False})
        return replace(base, **overrides)


@dataclass
class TrainResult:
    model: nn.Module
    history: list[dict]  # one dict per epoch
    steps: list[dict]  # one dict per logged step
    out_dir: Path | None
    interrupted: bool = False
    best_map: float | None = None


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 natively, so that autocast makes training faster.

    CUDA: ``torch.cuda.is_bf16_supported()``. CPU: the AVX512-BF16 or AMX-BF16 instructions (Linux's
    /proc/cpuinfo flags); elsewhere oneDNN would emulate bf16, which is slower than float32.
    Measured on a 2-core AMD EPYC with AVX512-BF16: a training step of the small SSD (batch 32,
    128 px) took 256 ms of CPU time in float32, 140 ms with bf16 autocast and channels_last.
    """
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    try:
        flags = next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), "")
    except OSError:
        return False
    return bool({"avx512_bf16", "amx_bf16"} & set(flags.split()))


def pick_device(requested: str | None = None) -> torch.device:
    """CUDA if present, else CPU; ``requested`` ('cpu', 'cuda', 'cuda:1') overrides."""
    if requested:
        dev = torch.device(requested)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {requested!r} was asked for but CUDA is not available; use --device cpu")
        return dev
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


# ---------------------------------------------------------------- data

def _sample_seed(seed: int, epoch: int, index: int) -> int:
    return (seed * 1_000_003 + epoch) * 10_000_019 + index


class SeededAugmented(Dataset):
    """Wraps a dataset so that item ``epoch * N + i`` is image i augmented with a generator seeded
    by (seed, epoch, i): augmentations are the same whichever worker or resume point loads them."""

    def __init__(self, dataset: Dataset, transform: Callable, seed: int) -> None:
        self.dataset, self.transform, self.seed = dataset, transform, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, global_index: int):
        epoch, index = divmod(global_index, len(self.dataset))
        image, target = self.dataset[index]
        gen = torch.Generator().manual_seed(_sample_seed(self.seed, epoch, index))
        return self.transform(image, target, generator=gen)


class EpochSampler(Sampler[int]):
    """Shuffled order for one epoch, seeded by (seed, epoch); sharded across ranks like
    ``DistributedSampler`` (padding by repetition); ``start`` skips the batches already done."""

    def __init__(self, n: int, seed: int, rank: int = 0, world_size: int = 1) -> None:
        self.n, self.seed, self.rank, self.world_size = n, seed, rank, world_size
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def _order(self) -> list[int]:
        gen = torch.Generator().manual_seed(self.seed * 7919 + self.epoch)
        order = torch.randperm(self.n, generator=gen).tolist()
        per_rank = math.ceil(self.n / self.world_size)
        order += order[: per_rank * self.world_size - self.n]
        return order[self.rank::self.world_size]

    def __iter__(self):
        offset = self.epoch * self.n
        return iter([offset + i for i in self._order()[self.start:]])

    def __len__(self) -> int:
        return math.ceil(self.n / self.world_size) - self.start


def normalized_targets(targets: list[dict], image_size: tuple[int, int], device: torch.device):
    """Pixel xyxy boxes of a batch to [0, 1] (what the matcher takes), moved to ``device``.
    ``image_size = (height, width)`` of the (resized) input."""
    h, w = image_size
    scale = torch.tensor([w, h, w, h], dtype=torch.float32)
    boxes = [(t["boxes"].float() / scale).to(device, non_blocking=True) for t in targets]
    labels = [t["labels"].to(device, non_blocking=True) for t in targets]
    return boxes, labels


def check_targets(targets: list[dict], num_classes: int) -> None:
    """Labels are checked on the CPU batch so a wrong dataset fails with a message, not a CUDA assert."""
    for t in targets:
        lab = t["labels"]
        if lab.numel() and (int(lab.min()) < 1 or int(lab.max()) >= num_classes):
            raise ValueError(
                f"a target has labels {lab.tolist()} but the model has num_classes={num_classes} "
                f"(background included), so labels must be in 1..{num_classes - 1}"
            )


# ---------------------------------------------------------------- schedule

def lr_factor(step: int, total_steps: int, cfg: TrainConfig) -> float:
    """Multiplier of the base lr at ``step``: linear warm-up, then multi-step or cosine decay."""
    if cfg.warmup_steps > 0 and step < cfg.warmup_steps:
        warm = (step + 1) / cfg.warmup_steps
    else:
        warm = 1.0
    if cfg.schedule == "cosine":
        progress = min(step / max(total_steps, 1), 1.0)
        decay = 0.5 * (1 + math.cos(math.pi * progress))
    elif cfg.schedule == "multistep":
        decay = cfg.gamma ** sum(step >= m * total_steps for m in cfg.milestones)
    else:
        raise ValueError(f"schedule must be 'multistep' or 'cosine', got {cfg.schedule!r}")
    return warm * decay


# ---------------------------------------------------------------- distributed

def _dist_info() -> tuple[int, int, int]:
    """(rank, local_rank, world_size) from torchrun's environment (1 process without it)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0")), world


def _init_distributed(device: torch.device) -> tuple[int, int]:
    rank, local_rank, world = _dist_info()
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    return rank, world


# ---------------------------------------------------------------- plotting

def plot_history(steps: list[dict], history: list[dict], path: str | Path) -> Path:
    """Loss parts and gradient norm per step, validation mAP per epoch, saved as a PNG next to the checkpoints."""
    from matplotlib.figure import Figure

    # A bare Figure, not pyplot: saving it needs no backend, so training inside a notebook does not
    # switch the notebook's inline backend to Agg (matplotlib.use would, and later figures would not show).
    fig = Figure(figsize=(16, 4))
    axes = fig.subplots(1, 3)
    if steps:
        x = [s["step"] for s in steps]
        for key in ("loss", "loc", "conf"):
            axes[0].plot(x, [s[key] for s in steps], label=key)
        axes[0].set_yscale("log")
        # Gradient norm before clipping (older logs may lack it: None is drawn as a gap).
        for key, style in (("grad_norm", "-"), ("grad_norm_max", ":")):
            values = [s.get(key) if s.get(key) is not None else float("nan") for s in steps]
            axes[1].plot(x, values, linestyle=style, color="tab:purple",
                         label="logged step" if key == "grad_norm" else "max since previous line")
        if any(math.isfinite(s.get("grad_norm") or 0.0) and (s.get("grad_norm") or 0.0) > 0 for s in steps):
            axes[1].set_yscale("log")
        axes[1].legend()
    axes[0].set(title="Training loss (MultiBox, Eq. 1)", xlabel="step", ylabel="loss per positive")
    axes[0].legend()
    axes[1].set(title="Gradient norm (before clipping)", xlabel="step", ylabel="total L2 norm")
    evals = [h for h in history if h.get("val_mAP") is not None]
    axes[2].plot([h["epoch"] for h in evals], [h["val_mAP"] for h in evals], marker="o")
    axes[2].set(title="Validation VOC mAP@0.5", xlabel="epoch", ylabel="mAP", ylim=(0, 1))
    fig.tight_layout()
    return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))


# ---------------------------------------------------------------- the loop

def train(
    model: SSD,
    train_dataset: Dataset,
    val_dataset: Dataset | None = None,
    config: TrainConfig | None = None,
    out_dir: str | Path | None = None,
    resume: str | Path | None = None,
    progress: bool = True,
    on_step: Callable[[dict], None] | None = None,
    on_epoch: Callable[[dict], None] | None = None,
) -> TrainResult:
    """Train ``model`` on ``train_dataset`` (items ``(image (3,H,W) in [0,1], target)`` with pixel
    xyxy boxes, no transform: the SSD augmentation is applied here, seeded per sample).

    Writes ``last.pt`` (every epoch and on Ctrl-C), ``best.pt`` (best validation mAP),
    ``metrics.jsonl`` and ``curves.png`` under ``out_dir`` when given. Each logged step records the
    loss and its parts, the lr, and the total gradient norm before clipping (``grad_norm``) with its
    maximum over the steps since the previous line (``grad_norm_max``; pictured by
    :func:`ssd_lib.debugging.plot_training_log`). ``on_step``/``on_epoch`` receive the logged dicts
    (the notebooks draw live curves with them).
    Raises :class:`NonFiniteLossError` naming the step if the loss becomes NaN or infinite.
    """
    cfg = config or TrainConfig()
    device = pick_device(cfg.device)
    rank, world = _init_distributed(device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    is_main = rank == 0
    use_amp = cfg.amp if cfg.amp is not None else native_bf16(device)
    channels_last = cfg.channels_last if cfg.channels_last is not None else (device.type == "cuda" or use_amp)
    torch.manual_seed(cfg.seed)
    previous_threads = torch.get_num_threads()
    if device.type == "cpu":
        # Compute threads and loader workers share the cores; oversubscribing them makes every
        # parallel op wait for a descheduled thread (measured: 2 threads + 1 worker on 2 busy cores
        # ran at 7 images/s, 1 thread + inline data at 70).
        # OMP_NUM_THREADS set by the user wins over the one-thread-per-free-core default.
        threads = cfg.cpu_threads or (previous_threads if os.environ.get("OMP_NUM_THREADS")
                                      else max(1, (os.cpu_count() or 1) // world - cfg.num_workers))
        torch.set_num_threads(threads)
    out = Path(out_dir) if out_dir is not None else None
    if out is not None and is_main:
        out.mkdir(parents=True, exist_ok=True)

    base = unwrap(model)
    size = base.prior_config.image_size
    model = base.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    criterion = MultiBoxLoss(neg_pos_ratio=cfg.neg_pos_ratio)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        # No weight decay on biases, norm scales and the L2Norm scale (standard practice).
        (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        optimizer = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    elif cfg.optimizer == "adamw":
        optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.momentum, 0.999))
    else:
        raise ValueError(f"optimizer must be 'sgd' or 'adamw', got {cfg.optimizer!r}")

    sampler = EpochSampler(len(train_dataset), cfg.seed, rank, world)
    steps_per_epoch = math.ceil(len(sampler) / cfg.batch_size)
    if cfg.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, cfg.max_steps_per_epoch)
    total_steps = steps_per_epoch * cfg.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total_steps, cfg))
    scaler = torch.amp.GradScaler(device.type, enabled=False)  # bf16 needs no loss scaling

    start_epoch, start_step, global_step = 0, 0, 0
    epoch_sums = None  # loss sums of the epoch a Ctrl-C interrupted, so that its record covers all its steps
    history: list[dict] = []
    steps_log: list[dict] = []
    if resume is not None:
        ckpt = load_checkpoint(resume, map_location=device)
        if ModelConfig.from_dict(ckpt["model_config"]) != base.config:
            raise ValueError(f"checkpoint {resume} holds another model configuration; resume with the same --model and dataset")
        base.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        start_epoch, start_step, global_step = ckpt["epoch"], ckpt["step_in_epoch"], ckpt["global_step"]
        history, steps_log = list(ckpt.get("history", [])), list(ckpt.get("steps", []))
        set_rng_state(ckpt["rng"])
        # Stopped at the last step of an epoch: the loop below has no step left and only closes the epoch.
        epoch_sums = ckpt.get("extra", {}).get("epoch_sums") if start_step else None

    train_model: nn.Module = model
    if world > 1:
        train_model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        train_model = torch.compile(train_model)

    augmented = SeededAugmented(train_dataset, SSDAugmentation(size=size, **cfg.augment), cfg.seed)
    loader_kwargs = dict(batch_size=cfg.batch_size, sampler=sampler, collate_fn=collate,
                         num_workers=cfg.num_workers, pin_memory=device.type == "cuda", drop_last=False)
    if cfg.num_workers > 0:
        loader_kwargs.update(persistent_workers=False, prefetch_factor=4, worker_init_fn=_ignore_sigint)
    loader = DataLoader(augmented, **loader_kwargs)

    metrics_file = (out / "metrics.jsonl").open("a") if out is not None and is_main else None
    best_map = max((h["val_mAP"] for h in history if h.get("val_mAP") is not None), default=None)
    interrupted = False
    amp_ctx = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if use_amp else nullcontext

    def checkpoint(epoch: int, step_in_epoch: int, name: str = "last.pt", sums: dict | None = None) -> None:
        if out is not None and is_main:
            save_checkpoint(out / name, model, optimizer, scheduler, scaler, epoch, step_in_epoch, global_step,
                            cfg, history, steps_log, extra={"class_names": list(getattr(train_dataset, "classes", [])),
                                                            "epoch_sums": sums or {}})

    # Ctrl-C: finish the current step, save, and return (a second Ctrl-C aborts at once).
    stop_requested = {"flag": False}
    previous_handler = None
    if is_main and _in_main_thread():
        def _handler(signum, frame):
            if stop_requested["flag"]:
                raise KeyboardInterrupt
            stop_requested["flag"] = True
        previous_handler = signal.signal(signal.SIGINT, _handler)

    try:
        skipped_in_a_row = 0
        for epoch in range(start_epoch, cfg.epochs):
            model.train()
            sampler.set_epoch(epoch, start=(start_step * cfg.batch_size if epoch == start_epoch else 0))
            first_step = start_step if epoch == start_epoch else 0
            bar = _progress(range(first_step, steps_per_epoch), progress and is_main, f"epoch {epoch + 1}/{cfg.epochs}")
            it = iter(loader)
            sums = {"loss": 0.0, "loc": 0.0, "conf": 0.0, "n": 0}
            if epoch == start_epoch and epoch_sums:
                sums = dict(epoch_sums)
            t_epoch, seen = time.perf_counter(), 0
            grad_norm_max = None
            skipped_steps = 0  # updates skipped for non-finite bf16 gradients in this epoch
            for step_in_epoch in bar:
                images, targets = next(it)
                check_targets(targets, base.num_classes)
                images = images.to(device, non_blocking=True)
                if channels_last:
                    images = images.contiguous(memory_format=torch.channels_last)
                gt_boxes, gt_labels = normalized_targets(targets, images.shape[-2:], device)
                with torch.no_grad():
                    loc_t, labels = match_batch(gt_boxes, gt_labels, base.priors)
                with amp_ctx():
                    loc, logits = train_model(images)
                parts = criterion(loc.float(), logits, loc_t, labels)
                loss_value = float(parts.total.detach())  # one sync per step, needed for the finite check and the log
                if not math.isfinite(loss_value):
                    raise NonFiniteLossError(
                        f"loss became {loss_value} at step {global_step + 1} (epoch {epoch + 1}, batch {step_in_epoch}); "
                        "the last good checkpoint was kept. Lower the learning rate, add warm-up or gradient clipping, "
                        "or check the data for degenerate boxes"
                    )
                optimizer.zero_grad(set_to_none=True)
                parts.total.backward()
                # The total gradient norm before clipping, every step (a spike warns before the loss does);
                # kept on the device, read only when a log line is written.
                if cfg.grad_clip:
                    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip).detach()
                else:
                    grad_norm = torch.nn.utils.get_total_norm([p.grad for p in model.parameters() if p.grad is not None])
                grad_norm_max = grad_norm if grad_norm_max is None else torch.maximum(grad_norm_max, grad_norm)
                step_lr = optimizer.param_groups[0]["lr"]  # the lr of this step; scheduler.step() sets the next one
                if use_amp and not bool(torch.isfinite(grad_norm)):
                    # bf16 gradients overflowed (seen on CPU, rarely): skip this update, as loss scaling
                    # does for fp16; many in a row mean the run itself diverged.
                    skipped_in_a_row += 1
                    skipped_steps += 1
                    if skipped_in_a_row >= MAX_SKIPPED_STEPS:
                        raise NonFiniteLossError(
                            f"gradients were NaN or infinite for {skipped_in_a_row} steps in a row up to step "
                            f"{global_step + 1} under bf16 autocast; the last good checkpoint was kept. Train in "
                            "float32 (TrainConfig(amp=False)), lower the learning rate or add warm-up")
                    optimizer.zero_grad(set_to_none=True)
                else:
                    skipped_in_a_row = 0
                optimizer.step()
                scheduler.step()
                global_step += 1
                seen += images.shape[0]
                sums["loss"] += loss_value
                sums["loc"] += float(parts.loc.detach())
                sums["conf"] += float(parts.conf.detach())
                sums["n"] += 1
                if global_step % cfg.log_every == 0 or step_in_epoch == steps_per_epoch - 1:
                    rec = {"step": global_step, "epoch": epoch + 1, "loss": loss_value, "loc": float(parts.loc.detach()),
                           "conf": float(parts.conf.detach()), "num_pos": int(parts.num_pos), "lr": step_lr,
                           "grad_norm": float(grad_norm), "grad_norm_max": float(grad_norm_max),
                           "skipped_steps": skipped_steps,
                           "images_per_s": seen * world / (time.perf_counter() - t_epoch)}
                    grad_norm_max = None  # the max over the steps since the previous log line
                    steps_log.append(rec)
                    if metrics_file:
                        metrics_file.write(json.dumps({"type": "step", **rec}) + "\n")
                        metrics_file.flush()
                    if on_step:
                        on_step(rec)
                if hasattr(bar, "set_postfix"):
                    bar.set_postfix(loss=f"{loss_value:.3f}", loc=f"{float(parts.loc.detach()):.3f}",
                                    conf=f"{float(parts.conf.detach()):.3f}", img_s=f"{seen * world / (time.perf_counter() - t_epoch):.0f}")
                if stop_requested["flag"]:
                    interrupted = True
                    checkpoint(epoch, step_in_epoch + 1, sums=sums)
                    break
            if interrupted:
                break
            if world > 1:
                # DDP copies rank 0's buffers (batch-norm statistics) at the start of each forward, so after
                # the last step every rank has its own: take rank 0's, which the checkpoint stores, before evaluating.
                for buffer in model.buffers():
                    dist.broadcast(buffer, src=0)
            epoch_time = time.perf_counter() - t_epoch
            rec = {"epoch": epoch + 1, "step": global_step, "loss": sums["loss"] / max(sums["n"], 1),
                   "loc": sums["loc"] / max(sums["n"], 1), "conf": sums["conf"] / max(sums["n"], 1),
                   "time_s": epoch_time, "images_per_s": seen * world / max(epoch_time, 1e-9), "val_mAP": None}
            if val_dataset is not None and cfg.eval_every and ((epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs):
                res = evaluate_model(model, val_dataset, batch_size=cfg.eval_batch_size, device=device,
                                     distributed=world > 1, progress=False)
                if res is not None:  # rank 0 gets the result
                    rec["val_mAP"] = res["mAP"]
            history.append(rec)
            if metrics_file:
                metrics_file.write(json.dumps({"type": "epoch", **rec}) + "\n")
                metrics_file.flush()
            if on_epoch and is_main:
                on_epoch(rec)
            checkpoint(epoch + 1, 0)
            if rec["val_mAP"] is not None and (best_map is None or rec["val_mAP"] > best_map):
                best_map = rec["val_mAP"]
                checkpoint(epoch + 1, 0, "best.pt")
            if out is not None and is_main:
                plot_history(steps_log, history, out / "curves.png")
            start_step = 0
    finally:
        torch.set_num_threads(previous_threads)
        if previous_handler is not None:
            signal.signal(signal.SIGINT, previous_handler)
        if metrics_file:
            metrics_file.close()
    return TrainResult(model=base, history=history, steps=steps_log, out_dir=out, interrupted=interrupted, best_map=best_map)


def _ignore_sigint(worker_id: int) -> None:
    """Workers leave Ctrl-C to the main process, which finishes the step and saves a checkpoint."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _progress(iterable, enabled: bool, desc: str):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, leave=True, dynamic_ncols=True)
