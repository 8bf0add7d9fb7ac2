"""The training loop (paper Sec. 3), as one plain function: no framework, every step visible.

:func:`train` prepares a run (device, model, optimiser, schedule, resume, loader), then for each
step: check and match the batch's targets (:func:`ssd_lib.train.batch_targets`), forward,
:class:`ssd_lib.loss.MultiBoxLoss`, backward, clipping, an optimiser step; a metrics line every
``log_every`` steps; and at the end of each epoch validation, checkpoints and ``curves.png``.

What each step reads back from the device (on a GPU, each read waits for the work queued before it):
the loss, for the finite check before the update, and under bf16 whether the gradients are finite.
The matcher (``nonzero``) and the loss (boolean masks, the top-k size of the mining) wait for the
device too, since their output sizes depend on the data. Loss parts, N and the gradient norm stay on
the device until a log line; the batch is checked once, on the CPU (:func:`ssd_lib.train.check_targets`).

Usage::

    from ssd_lib.train import TrainConfig, train
    result = train(model, ShapesDataset("train"), config=TrainConfig.small_cpu(), out_dir="runs/demo")
"""
from __future__ import annotations

import json
import math
import os
import signal
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from ..augment import SSDAugmentation
from ..checkpoint import restore_checkpoint, save_checkpoint, unwrap
from ..data import collate
from ..evaluate import evaluate_model
from ..loss import LossParts, MultiBoxLoss
from ..model import SSD
from ..viz import plot_training_log
from .batches import EpochSampler, SeededAugmented, batch_targets, library_targets
from .config import TrainConfig, lr_factor, native_bf16, pick_device

__all__ = ["train", "TrainResult", "NonFiniteLossError", "MAX_SKIPPED_STEPS"]


MAX_SKIPPED_STEPS = 10  # consecutive updates skipped for non-finite bf16 gradients before a run stops


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is left untouched."""


@dataclass
class TrainResult:
    model: nn.Module
    history: list[dict]  # one dict per epoch
    steps: list[dict]  # one dict per logged step
    out_dir: Path | None
    interrupted: bool = False
    best_map: float | None = None


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


# ---------------------------------------------------------------- the pieces of the loop, in the order they run

def _setup_device(cfg: TrainConfig) -> tuple[torch.device, int, int]:
    """The device, (rank, world size) under torchrun (0, 1 without it), and the CPU compute threads."""
    device = pick_device(cfg.device)
    rank, world = _init_distributed(device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    torch.manual_seed(cfg.seed)
    if device.type == "cpu":
        # Compute threads and loader workers share the cores; oversubscribing them makes every
        # parallel op wait for a descheduled thread (measured: 2 threads + 1 worker on 2 busy cores
        # ran at 7 images/s, 1 thread + inline data at 70).
        # OMP_NUM_THREADS set by the user wins over the one-thread-per-free-core default.
        threads = cfg.cpu_threads or (torch.get_num_threads() if os.environ.get("OMP_NUM_THREADS")
                                      else max(1, (os.cpu_count() or 1) // world - cfg.num_workers))
        torch.set_num_threads(threads)
    return device, rank, world


def _build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD with momentum (the paper) or AdamW, with two parameter groups: weight decay on the
    convolution weights, none on biases, norm scales and the L2Norm scale (standard practice)."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.momentum, 0.999))
    raise ValueError(f"optimizer must be 'sgd' or 'adamw', got {cfg.optimizer!r}")


@dataclass
class _Run:
    """What the pieces of one run share: built once by :func:`train`, then read and updated by each step."""

    cfg: TrainConfig
    device: torch.device
    rank: int
    world: int
    model: SSD  # the plain model, on the device (checkpoints, evaluation)
    criterion: Callable[[Tensor, Tensor, Tensor, Tensor], LossParts]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    steps_per_epoch: int
    out: Path | None
    class_names: list[str]
    train_model: nn.Module | None = None  # the same model, wrapped in DDP / torch.compile when asked
    assign: Callable = library_targets  # the targets function (batch_targets' ``assign``)
    use_amp: bool = False
    channels_last: bool = False
    global_step: int = 0
    skipped_in_a_row: int = 0  # updates skipped for non-finite bf16 gradients, counted across epochs
    history: list[dict] = field(default_factory=list)
    steps_log: list[dict] = field(default_factory=list)
    metrics_file: Any = None

    def write(self, kind: str, rec: dict) -> None:
        if self.metrics_file:
            self.metrics_file.write(json.dumps({"type": kind, **rec}) + "\n")
            self.metrics_file.flush()

    def save(self, epoch: int, step_in_epoch: int, name: str = "last.pt", sums: dict | None = None) -> None:
        if self.out is not None and self.rank == 0:
            save_checkpoint(self.out / name, self.model, self.optimizer, self.scheduler, self.scaler, epoch,
                            step_in_epoch, self.global_step, self.cfg, self.history, self.steps_log,
                            extra={"class_names": self.class_names, "epoch_sums": sums or {}})


@dataclass
class _Epoch:
    """Running totals of one epoch. The loss parts of each step stay on the device (``pending``) until
    a log line or the end of the epoch reads them all at once."""

    sums: dict
    t_start: float = field(default_factory=time.perf_counter)
    seen: int = 0
    skipped_steps: int = 0  # updates skipped for non-finite bf16 gradients in this epoch
    grad_norm_max: Tensor | None = None  # the max since the previous log line, on the device
    pending: list[tuple[Tensor, Tensor]] = field(default_factory=list)

    def add(self, images: int, loss: float, parts: LossParts, grad_norm: Tensor, skipped: bool) -> None:
        self.seen += images
        self.skipped_steps += skipped
        self.sums["loss"] += loss
        self.sums["n"] += 1
        self.pending.append((parts.loc.detach(), parts.conf.detach()))
        self.grad_norm_max = grad_norm if self.grad_norm_max is None else torch.maximum(self.grad_norm_max, grad_norm)

    def flush(self) -> dict:
        """Add the pending loss parts to the sums (in step order: the same floats as adding each step)."""
        if self.pending:
            for loc, conf in torch.stack([torch.stack(pair) for pair in self.pending]).tolist():
                self.sums["loc"] += loc
                self.sums["conf"] += conf
            self.pending = []
        return self.sums

    def images_per_s(self, world: int) -> float:
        return self.seen * world / max(time.perf_counter() - self.t_start, 1e-9)


def _train_step(run: _Run, images: Tensor, targets: list[dict], where: str) -> tuple[LossParts, float, Tensor, bool]:
    """One update on a CPU batch: targets, forward, MultiBox loss, backward, clipping, optimiser and lr step.
    Returns (loss parts, the loss as a float, the gradient norm before clipping, whether the update was skipped)."""
    base, cfg = run.model, run.cfg
    loc_t, labels = batch_targets(targets, images.shape[-2:], base.priors, base.num_classes, run.assign)
    images = images.to(run.device, non_blocking=True)
    if run.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    with torch.autocast(run.device.type, dtype=torch.bfloat16) if run.use_amp else nullcontext():
        loc, logits = run.train_model(images)
    parts = run.criterion(loc.float(), logits, loc_t, labels)
    # The loop's one read back from the device per step (a second under bf16, below): no update may
    # follow a loss that is not finite. The loss parts and the gradient norm wait for a log line.
    loss_value = float(parts.total.detach())
    if not math.isfinite(loss_value):
        raise NonFiniteLossError(
            f"loss became {loss_value} at step {run.global_step + 1} ({where}); the last good checkpoint was kept. "
            "Lower the learning rate, add warm-up or gradient clipping, or check the data for degenerate boxes")
    run.optimizer.zero_grad(set_to_none=True)
    parts.total.backward()
    # The total gradient norm before clipping, every step (a spike warns before the loss does); it
    # stays on the device, read only when a log line is written.
    if cfg.grad_clip:
        grad_norm = torch.nn.utils.clip_grad_norm_(base.parameters(), cfg.grad_clip).detach()
    else:
        grad_norm = torch.nn.utils.get_total_norm([p.grad for p in base.parameters() if p.grad is not None])
    skipped = run.use_amp and not bool(torch.isfinite(grad_norm))  # under bf16, a second read per step
    if skipped:
        # bf16 gradients overflowed (seen on CPU, rarely): skip this update, as loss scaling does for
        # fp16; many in a row mean the run itself diverged.
        run.skipped_in_a_row += 1
        if run.skipped_in_a_row >= MAX_SKIPPED_STEPS:
            raise NonFiniteLossError(
                f"gradients were NaN or infinite for {run.skipped_in_a_row} steps in a row up to step "
                f"{run.global_step + 1} under bf16 autocast; the last good checkpoint was kept. Train in "
                "float32 (TrainConfig(amp=False)), lower the learning rate or add warm-up")
        run.optimizer.zero_grad(set_to_none=True)
    else:
        run.skipped_in_a_row = 0
    run.optimizer.step()
    run.scheduler.step()
    run.global_step += 1
    return parts, loss_value, grad_norm, skipped


def _log_step(run: _Run, ep: _Epoch, epoch: int, parts: LossParts, loss: float, grad_norm: Tensor, lr: float) -> dict:
    """A metrics line: the loss and its parts, N, the lr the step used, the gradient norm and its max."""
    ep.flush()
    rec = {"step": run.global_step, "epoch": epoch + 1, "loss": loss, "loc": float(parts.loc.detach()),
           "conf": float(parts.conf.detach()), "num_pos": int(parts.num_pos), "lr": lr,
           "grad_norm": float(grad_norm), "grad_norm_max": float(ep.grad_norm_max),
           "skipped_steps": ep.skipped_steps, "images_per_s": ep.images_per_s(run.world)}
    ep.grad_norm_max = None  # the max over the steps since the previous log line
    run.steps_log.append(rec)
    run.write("step", rec)
    return rec


def _close_epoch(run: _Run, ep: _Epoch, epoch: int, val_dataset: Dataset | None, best_map: float | None,
                 on_epoch: Callable[[dict], None] | None) -> float | None:
    """The epoch's record (mean loss parts, speed, validation mAP), its metrics line, ``last.pt``,
    ``best.pt`` when the mAP improved, and ``curves.png``. Returns the best validation mAP so far."""
    cfg = run.cfg
    if run.world > 1:
        # DDP copies rank 0's buffers (batch-norm statistics) at the start of each forward, so after
        # the last step every rank has its own: take rank 0's, which the checkpoint stores, before evaluating.
        for buffer in run.model.buffers():
            dist.broadcast(buffer, src=0)
    sums, n = ep.flush(), max(ep.sums["n"], 1)
    epoch_time = time.perf_counter() - ep.t_start
    rec = {"epoch": epoch + 1, "step": run.global_step, "loss": sums["loss"] / n, "loc": sums["loc"] / n,
           "conf": sums["conf"] / n, "time_s": epoch_time, "images_per_s": ep.seen * run.world / max(epoch_time, 1e-9),
           "val_mAP": None}
    if val_dataset is not None and cfg.eval_every and ((epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs):
        res = evaluate_model(run.model, val_dataset, batch_size=cfg.eval_batch_size, device=run.device,
                             distributed=run.world > 1, progress=False)
        rec["val_mAP"] = res["mAP"]  # the complete result, on every rank
    run.history.append(rec)
    run.write("epoch", rec)
    if on_epoch and run.rank == 0:
        on_epoch(rec)
    run.save(epoch + 1, 0)
    if rec["val_mAP"] is not None and (best_map is None or rec["val_mAP"] > best_map):
        best_map = rec["val_mAP"]
        run.save(epoch + 1, 0, "best.pt")
    if run.out is not None and run.rank == 0:
        plot_training_log(run.steps_log, history=run.history, grad_clip=cfg.grad_clip, path=run.out / "curves.png")
    return best_map


def _loss_parts(loss: Callable[[Tensor, Tensor, Tensor, Tensor], Any]) -> Callable[..., LossParts]:
    """A loss function as the trainer calls it: one returning :class:`ssd_lib.loss.LossParts` as it is, one
    returning only the scalar total (the learner's ``multibox_loss``) with its parts unknown (NaN in the log)."""
    def parts(loc: Tensor, logits: Tensor, loc_targets: Tensor, labels: Tensor) -> LossParts:
        out = loss(loc, logits, loc_targets, labels)
        if isinstance(out, LossParts):
            return out
        if not (isinstance(out, Tensor) and out.ndim == 0):
            raise TypeError(f"the loss function must return a scalar tensor or LossParts; got {type(out).__name__}"
                            + (f" of shape {tuple(out.shape)}" if isinstance(out, Tensor) else ""))
        unknown = torch.full((), float("nan"), device=out.device)
        return LossParts(out, unknown, unknown, (labels > 0).sum())
    return parts


def _prepare(model: SSD, train_dataset: Dataset, cfg: TrainConfig, out_dir: str | Path | None,
             resume: str | Path | None, targets: Callable | None = None,
             loss: Callable | None = None) -> tuple[_Run, EpochSampler, DataLoader, tuple[int, int, dict | None]]:
    """Everything the loop needs: the device and the model on it, the optimiser and its schedule, the
    state of a resumed run, the wrapped model, the seeded data loader and the metrics file. The last
    item is where the loop starts: (epoch, step in that epoch, the loss sums of that epoch so far)."""
    device, rank, world = _setup_device(cfg)
    out = Path(out_dir) if out_dir is not None else None
    if out is not None and rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    use_amp = cfg.amp if cfg.amp is not None else native_bf16(device)
    base = unwrap(model).to(device)
    channels_last = cfg.channels_last if cfg.channels_last is not None else (device.type == "cuda" or use_amp)
    if channels_last:
        base = base.to(memory_format=torch.channels_last)
    optimizer = _build_optimizer(base, cfg)
    sampler = EpochSampler(len(train_dataset), cfg.seed, rank, world)
    steps_per_epoch = min(math.ceil(len(sampler) / cfg.batch_size), cfg.max_steps_per_epoch or math.inf)
    total_steps = steps_per_epoch * cfg.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total_steps, cfg))
    scaler = torch.amp.GradScaler(device.type, enabled=False)  # bf16 needs no loss scaling
    # The targets were checked once on the CPU batch (check_targets): the loss skips its label check.
    criterion = MultiBoxLoss(neg_pos_ratio=cfg.neg_pos_ratio, check_labels=False) if loss is None else _loss_parts(loss)
    run = _Run(cfg, device, rank, world, base, criterion, optimizer, scheduler, scaler, steps_per_epoch, out,
               list(getattr(train_dataset, "classes", [])), use_amp=use_amp, channels_last=channels_last,
               assign=targets or library_targets)
    start = (0, 0, None)
    if resume is not None:
        ckpt = restore_checkpoint(resume, base, optimizer, scheduler, scaler, map_location=device)
        run.global_step, run.history, run.steps_log = ckpt["global_step"], list(ckpt.get("history", [])), list(ckpt.get("steps", []))
        # Stopped at the last step of an epoch: the loop has no step left and only closes the epoch.
        start = (ckpt["epoch"], ckpt["step_in_epoch"],
                 ckpt.get("extra", {}).get("epoch_sums") if ckpt["step_in_epoch"] else None)
    run.train_model = base
    if world > 1:
        run.train_model = nn.parallel.DistributedDataParallel(base, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        run.train_model = torch.compile(run.train_model)
    augmented = SeededAugmented(train_dataset, SSDAugmentation(size=base.prior_config.image_size, **cfg.augment), cfg.seed)
    loader_kwargs = dict(batch_size=cfg.batch_size, sampler=sampler, collate_fn=collate,
                         num_workers=cfg.num_workers, pin_memory=device.type == "cuda", drop_last=False)
    if cfg.num_workers > 0:
        loader_kwargs.update(persistent_workers=False, prefetch_factor=4, worker_init_fn=_ignore_sigint)
    run.metrics_file = (out / "metrics.jsonl").open("a") if out is not None and rank == 0 else None
    return run, sampler, DataLoader(augmented, **loader_kwargs), start


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
    targets: Callable[[list[Tensor], list[Tensor], Tensor], tuple[Tensor, Tensor]] | None = None,
    loss: Callable[[Tensor, Tensor, Tensor, Tensor], Any] | None = None,
) -> TrainResult:
    """Train ``model`` on ``train_dataset`` (items ``(image (3,H,W) in [0,1], target)`` with pixel
    xyxy boxes, no transform: the SSD augmentation is applied here, seeded per sample).

    Writes ``last.pt`` (every epoch and on Ctrl-C), ``best.pt`` (best validation mAP),
    ``metrics.jsonl`` and ``curves.png`` (:func:`ssd_lib.viz.plot_training_log`) under ``out_dir``
    when given. Each logged step records the loss and its parts, the lr, and the total gradient norm
    before clipping (``grad_norm``) with its maximum over the steps since the previous line
    (``grad_norm_max``). ``on_step``/``on_epoch`` receive the logged dicts (the notebooks draw live
    curves with them). Raises ValueError naming the image for a bad target (:func:`ssd_lib.train.check_targets`)
    and :class:`NonFiniteLossError` naming the step if the loss becomes NaN or infinite.

    The two pieces a learner can plug in (lesson 13 trains with the learner's own), the library's by default:
    ``targets(gt_boxes, gt_labels, priors) -> (loc_targets (B, P, 4), labels (B, P))`` builds the loss's targets
    from the checked objects (boxes xyxy in [0, 1]; :func:`ssd_lib.train.batch_targets` says exactly what goes in);
    default :func:`ssd_lib.train.library_targets`. ``loss(loc, logits, loc_targets, labels)`` returns
    :class:`ssd_lib.loss.LossParts` or the scalar total (then the log's loc/conf parts are NaN); default
    ``MultiBoxLoss(neg_pos_ratio=config.neg_pos_ratio)``.
    """
    cfg = config or TrainConfig()
    previous_threads, previous_handler, stop = torch.get_num_threads(), None, {"requested": False}
    run, interrupted = None, False
    try:
        run, sampler, loader, start = _prepare(model, train_dataset, cfg, out_dir, resume, targets, loss)
        best_map = max((h["val_mAP"] for h in run.history if h.get("val_mAP") is not None), default=None)
        if run.rank == 0 and _in_main_thread():  # Ctrl-C: finish the step, save, return (twice: abort)
            previous_handler = signal.signal(signal.SIGINT, lambda signum, frame: _request_stop(stop))
        start_epoch, start_step, epoch_sums = start
        for epoch in range(start_epoch, cfg.epochs):
            run.model.train()
            first_step = start_step if epoch == start_epoch else 0
            sampler.set_epoch(epoch, start=first_step * cfg.batch_size)
            bar = _progress(range(first_step, run.steps_per_epoch), progress and run.rank == 0,
                            f"epoch {epoch + 1}/{cfg.epochs}")
            batches = iter(loader)
            ep = _Epoch(dict(epoch_sums) if epoch == start_epoch and epoch_sums else
                        {"loss": 0.0, "loc": 0.0, "conf": 0.0, "n": 0})
            for step_in_epoch in bar:
                images, targets = next(batches)
                lr = run.optimizer.param_groups[0]["lr"]  # the lr of this step; the step sets the next one
                parts, loss, grad_norm, skipped = _train_step(run, images, targets,
                                                              f"epoch {epoch + 1}, batch {step_in_epoch}")
                ep.add(images.shape[0], loss, parts, grad_norm, skipped)
                if run.global_step % cfg.log_every == 0 or step_in_epoch == run.steps_per_epoch - 1:
                    rec = _log_step(run, ep, epoch, parts, loss, grad_norm, lr)
                    if on_step:
                        on_step(rec)
                    if hasattr(bar, "set_postfix"):
                        bar.set_postfix(loss=f"{rec['loss']:.3f}", loc=f"{rec['loc']:.3f}", conf=f"{rec['conf']:.3f}",
                                        img_s=f"{rec['images_per_s']:.0f}")
                if stop["requested"]:
                    interrupted = True
                    run.save(epoch, step_in_epoch + 1, sums=ep.flush())
                    break
            if interrupted:
                break
            best_map = _close_epoch(run, ep, epoch, val_dataset, best_map, on_epoch)
    finally:
        torch.set_num_threads(previous_threads)
        if previous_handler is not None:
            signal.signal(signal.SIGINT, previous_handler)
        if run is not None and run.metrics_file:
            run.metrics_file.close()
    return TrainResult(model=run.model, history=run.history, steps=run.steps_log, out_dir=run.out,
                       interrupted=interrupted, best_map=best_map)


def _request_stop(stop: dict) -> None:
    """The SIGINT handler: the first Ctrl-C asks the loop to stop after this step, a second aborts at once."""
    if stop["requested"]:
        raise KeyboardInterrupt
    stop["requested"] = True


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
