"""The paper's ablations (Sec. 3.2, "Model analysis", Tables 2 and 3) re-run on the small SSD.

Each named :class:`Variant` changes ONE thing of the course's small model (``ModelConfig.small``,
128 px, 5 source maps) or of its training augmentation; everything else is equal: the same
seeds, schedule (``TrainConfig.small_cpu`` with the step count given), training images and test
images. Each run records test-split VOC mAP@0.5, overall and for small / medium / large objects
(:func:`size_stratified_map`), training time and inference images/s. The paper's "atrous is
faster" claim is about VGG16's fc6, which the small model does not have: :func:`vgg_fc_speed`
measures it on SSD300's own base network (forward images/s on the CPU, equal 300x300 input).

Usage::

    python -m ssd_lib.course.ablations --variants full square_only --seeds 0 1 2 --steps 300 --out assets/ablations.json
    from ssd_lib.course.ablations import VARIANTS, build_variant_model, run_ablations
    model = build_variant_model("single_map", num_classes=7)      # one 8x8 source map
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torchvision.ops import box_iou

from ssd_lib.files import write_text
from ssd_lib.machine import machine_info
from ssd_lib.model import SSD, ModelConfig, SmallBackbone, VGG16Backbone, build_model, count_parameters

__all__ = [
    "Variant", "VARIANTS", "TRAINED_VARIANTS", "SIZE_BINS", "Settings", "variant_model_config", "build_variant_model",
    "box_size", "size_stratified_map", "vgg_fc_networks", "vgg_fc_speed", "run_one", "run_ablations",
    "summarize", "compare_runs", "conv_macs", "object_sizes", "main",
]

# Object size = sqrt(box area / image area), the side of the object as a fraction of the image
# side (ShapesDataset draws sizes from 0.05 to 0.9 of the side). COCO's pixel bins (32^2, 96^2)
# would leave "small" almost empty on the built-in data, so the bins are relative.
SIZE_BINS: dict[str, tuple[float, float]] = {"small": (0.0, 0.1), "medium": (0.1, 0.3), "large": (0.3, math.inf)}

FULL_AUGMENT: dict = {}  # SSDAugmentation defaults: photometric, zoom out, min-IoU crop, flip (Sec. 2.2)


@dataclass(frozen=True)
class Variant:
    """One ablation: what changes from ``full``, which claim it tests, and the paper's number.

    ``ratios``: "2,3" (the full model's extra ratios), "2" (no 3 and 1/3 boxes) or "none" (only
    the two square boxes per location); ``maps``: "all" (5 source maps), "fewer" (the 3 finest)
    or "single" (only the stride-16 map); ``augment``: keyword arguments of SSDAugmentation;
    ``trained``: False for a speed-only variant; ``paper_map``: SSD300 VOC2007 mAP of the
    matching row of the paper (Table 2 / Sec. 3.2), None where the paper gives no number.
    """

    name: str
    description: str
    claim: str
    augment: dict = field(default_factory=dict)
    ratios: str = "2,3"
    maps: str = "all"
    trained: bool = True
    paper_map: float | None = None
    paper_note: str = ""


VARIANTS: dict[str, Variant] = {v.name: v for v in [
    Variant("full", "5 source maps, extra ratios 2, 1/2, 3, 1/3, full augmentation (photometric, zoom out, "
            "min-IoU crop, flip)", "reference", FULL_AUGMENT, paper_map=74.3, paper_note="Table 2, all columns"),
    Variant("no_sampling_aug", "as full, without zoom out and without the min-IoU crop (photometric and flip kept)",
            "data augmentation is crucial", {"expand": False, "crop": False}, paper_map=65.5,
            paper_note="Table 2, no data augmentation"),
    Variant("no_ratio3", "as full, without the 3 and 1/3 boxes (4 boxes per location)",
            "more default box shapes is better", ratios="2", paper_map=73.7,
            paper_note="Table 2, without {1/3, 3} boxes"),
    Variant("square_only", "as full, only the two square boxes per location",
            "more default box shapes is better", ratios="none", paper_map=71.6,
            paper_note="Table 2, without {1/2, 2} and {1/3, 3} boxes"),
    Variant("fewer_maps", "as full, only the 3 finest source maps (strides 8, 16, 32), scales re-tiled 0.1 to 0.9",
            "multiple output layers at different resolutions is better", maps="fewer", paper_map=None,
            paper_note="Table 3: each removed source map costs accuracy (no single number in our notes)"),
    Variant("single_map", "as full, all default boxes (same scales and ratios) on the single stride-16 map",
            "multiple output layers at different resolutions is better", maps="single", paper_map=62.4,
            paper_note="Table 3, predictions from conv7 (fc7) only"),
    Variant("non_atrous", "SSD300's VGG16 base with the full fc6 (pool5 2x2 stride 2, 7x7x4096 fc6, 4096 fc7) "
            "instead of the subsampled dilated fc6: forward speed only", "atrous is faster", trained=False,
            paper_map=74.2, paper_note="Table 2, without atrous: about 20% slower"),
]}
TRAINED_VARIANTS: tuple[str, ...] = tuple(name for name, v in VARIANTS.items() if v.trained)


def _variant(name: str) -> Variant:
    if name not in VARIANTS:
        raise ValueError(f"unknown variant {name!r}; choose from {', '.join(VARIANTS)}")
    return VARIANTS[name]


# ---------------------------------------------------------------- models

def _ratios(spec: str, num_maps: int) -> tuple[tuple[float, ...], ...]:
    # The finest map gets only ratio 2 (4 boxes), as SSD300's conv4_3 does (Sec. 3.1).
    if spec == "2,3":
        return ((2,),) + ((2, 3),) * (num_maps - 1)
    if spec == "2":
        return ((2,),) * num_maps
    if spec == "none":
        return ((),) * num_maps
    raise ValueError(f"ratios must be '2,3', '2' or 'none'; got {spec!r}")


def variant_model_config(name: str, num_classes: int, image_size: int = 128) -> ModelConfig:
    """The ModelConfig of a trained variant. For ``single_map`` it describes the *full* model's
    default boxes; :func:`build_variant_model` moves all of them onto the stride-16 map."""
    v = _variant(name)
    if not v.trained:
        raise ValueError(f"variant {name!r} is not trained (speed only); see vgg_fc_speed")
    if v.maps == "fewer":
        # Paper Table 3: drop the coarsest maps and re-tile the scales over the maps left (Eq. 4).
        return ModelConfig.small(num_classes, image_size, aspect_ratios=_ratios(v.ratios, 3), num_extras=1)
    return ModelConfig.small(num_classes, image_size, aspect_ratios=_ratios(v.ratios, 5))


class RepeatedSourceMap(nn.Module):
    """A SmallBackbone without extra layers whose stride-16 map is the only source map, returned
    once per box scale: one predictor per scale on the same map equals one 3x3 predictor with all
    the boxes (the output channels of several convolutions concatenated)."""

    def __init__(self, repeats: int, **backbone_kwargs) -> None:
        super().__init__()
        self.base = SmallBackbone(num_extras=0, **backbone_kwargs)
        self.repeats = repeats
        self.out_channels = (self.base.out_channels[-1],) * repeats

    def forward(self, images: Tensor) -> list[Tensor]:
        stride16 = self.base(images)[-1]
        return [stride16] * self.repeats


def build_variant_model(name: str, num_classes: int, image_size: int = 128) -> SSD:
    """The SSD of variant ``name`` (untrained). Only ``single_map`` is not built by ``build_model``:
    its backbone stops at the stride-16 map and every default box of the full model is centred
    on that map's grid instead (same sizes and ratios; Table 3's conv7-only row re-tiles likewise)."""
    v = _variant(name)
    cfg = variant_model_config(name, num_classes, image_size)
    if v.maps != "single":
        return build_model(cfg)
    full = cfg.priors
    side = full.feature_maps[1]  # the stride-16 map, the analogue of SSD300's conv7 (fc7)
    m = len(full.feature_maps)
    priors = replace(full, feature_maps=(side,) * m, steps=(image_size / side,) * m)
    return SSD(RepeatedSourceMap(m), priors, num_classes, config=None)


# ---------------------------------------------------------------- size-stratified mAP

def box_size(boxes: Tensor, image_hw: tuple[int, int]) -> Tensor:
    """sqrt(box area / image area) of ``boxes (N, 4)`` pixel xyxy in an image of ``(H, W)`` -> (N,)."""
    h, w = image_hw
    wh = (boxes[:, 2:] - boxes[:, :2]).clamp(min=0)
    return torch.sqrt(wh[:, 0] * wh[:, 1] / float(h * w))


def size_stratified_map(detections: Sequence[dict], ground_truths: Sequence[dict], image_sizes: Sequence[tuple[int, int]],
                        class_names: Sequence[str], bins: dict[str, tuple[float, float]] = SIZE_BINS,
                        iou_threshold: float = 0.5) -> dict[str, dict]:
    """VOC mAP@0.5 restricted to objects of each size bin (COCO's APs/APm/APl rule, VOC scoring).

    For bin [lo, hi): ground-truth objects outside it are marked difficult (neither true nor false
    positives), and a detection whose own size is outside it is dropped unless it overlaps an
    in-bin object of its class with IoU >= ``iou_threshold`` (COCO ignores such unmatched
    detections). Returns ``{bin: {"mAP": float (NaN if no object), "num_objects": int}}``.
    A loop over images, not hot: one box_iou per image.
    """
    from ssd_lib.metrics import evaluate_voc

    out = {}
    for name, (lo, hi) in bins.items():
        dets, gts, count = [], [], 0
        for det, gt, hw in zip(detections, ground_truths, image_sizes):
            g_boxes = torch.as_tensor(gt["boxes"], dtype=torch.float32).reshape(-1, 4)
            g_labels = torch.as_tensor(gt["labels"]).reshape(-1)
            g_size = box_size(g_boxes, hw)
            difficult = torch.as_tensor(gt.get("difficult", torch.zeros(len(g_labels), dtype=torch.bool))).bool().reshape(-1)
            inside = (g_size >= lo) & (g_size < hi)
            count += int((inside & ~difficult).sum())
            gts.append({"boxes": g_boxes, "labels": g_labels, "difficult": difficult | ~inside})
            d_boxes = torch.as_tensor(det["boxes"], dtype=torch.float32).reshape(-1, 4)
            d_labels = torch.as_tensor(det["labels"]).reshape(-1)
            d_size = box_size(d_boxes, hw)
            keep = (d_size >= lo) & (d_size < hi)
            if len(d_boxes) and bool(inside.any()):
                iou = box_iou(d_boxes, g_boxes[inside])
                same = d_labels[:, None] == g_labels[inside][None, :]
                keep |= ((iou >= iou_threshold) & same).any(dim=1)
            dets.append({"boxes": d_boxes[keep], "scores": torch.as_tensor(det["scores"]).reshape(-1)[keep],
                         "labels": d_labels[keep]})
        res = evaluate_voc(dets, gts, iou_threshold=iou_threshold, class_names=list(class_names),
                           num_classes=len(class_names))
        out[name] = {"mAP": float(res["mAP"]), "num_objects": count}
    return out


# ---------------------------------------------------------------- atrous vs non-atrous (SSD300's VGG16)

def vgg_fc_networks() -> dict[str, nn.Module]:
    """SSD300's base network up to fc7 (the only part the atrous ablation changes), three ways:

    ``atrous``: pool5 3x3 stride 1, fc6 3x3x1024 with dilation 6, fc7 1x1x1024 (the paper's SSD300);
    ``non_atrous``: "the full VGG16" of Sec. 3.2: pool5 2x2 stride 2, fc6 as a 7x7x4096 conv,
    fc7 1x1x4096 (fc7 is then 10x10 instead of 19x19 at 300x300);
    ``no_dilation``: ``VGG16Backbone(atrous=False)``: the subsampled 3x3x1024 fc6 without dilation
    (same cost as atrous, smaller receptive field): shows where the speed difference comes from.
    """
    atrous, plain = VGG16Backbone("ssd300"), VGG16Backbone("ssd300", atrous=False)
    full_fc = nn.Sequential(
        nn.MaxPool2d(2, 2),  # pool4
        nn.Conv2d(512, 512, 3, padding=1), nn.ReLU(inplace=True),  # conv5_1
        nn.Conv2d(512, 512, 3, padding=1), nn.ReLU(inplace=True),  # conv5_2
        nn.Conv2d(512, 512, 3, padding=1), nn.ReLU(inplace=True),  # conv5_3
        nn.MaxPool2d(2, 2, ceil_mode=True),  # pool5 as in VGG16: 2x2 stride 2 (Caffe rounds up: 19 -> 10)
        nn.Conv2d(512, 4096, 7, padding=3), nn.ReLU(inplace=True),  # fc6, VGG16's 7x7x512x4096 weights as a conv
        nn.Conv2d(4096, 4096, 1), nn.ReLU(inplace=True),  # fc7
    )
    return {
        "atrous": nn.Sequential(atrous.vgg, atrous.fc),
        "non_atrous": nn.Sequential(VGG16Backbone("ssd300").vgg, full_fc),
        "no_dilation": nn.Sequential(plain.vgg, plain.fc),
    }


@torch.no_grad()
def vgg_fc_speed(image_size: int = 300, batch_size: int = 1, repeats: int = 3, seed: int = 0) -> dict[str, dict]:
    """Forward images/s of the three :func:`vgg_fc_networks` on the CPU at ``image_size`` x ``image_size``.

    The three are timed in turn, ``repeats`` rounds after one warm-up round, so a change in the
    machine's load hits all three alike; each reports its median round. Returns
    ``{name: {"images_per_s", "parameters", "fc7_side"}}``.
    """
    torch.manual_seed(seed)
    nets = {k: n.eval() for k, n in vgg_fc_networks().items()}
    x = torch.randn(batch_size, 3, image_size, image_size)
    times: dict[str, list[float]] = {k: [] for k in nets}
    sides = {k: int(n(x).shape[-1]) for k, n in nets.items()}  # warm-up round
    for _ in range(repeats):
        for k, n in nets.items():
            t0 = time.perf_counter()
            n(x)
            times[k].append(time.perf_counter() - t0)
    return {k: {"images_per_s": batch_size / float(np.median(times[k])), "parameters": count_parameters(nets[k]),
                "fc7_side": sides[k]} for k in nets}


def conv_macs(net: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of the convolutions of ``net`` for one input of ``input_shape`` (C, H, W).

    Runs on the "meta" device (shapes only, no arithmetic), so it is instant even for VGG16:
    each conv costs (output elements) x (input channels / groups) x kernel height x kernel width.
    """
    import copy

    on_meta = all(p.is_meta for p in net.parameters())  # built under `with torch.device("meta")`: no copy needed
    meta = net if on_meta else copy.deepcopy(net).to("meta")
    total = 0

    def hook(module: nn.Conv2d, inputs, output: Tensor) -> None:
        nonlocal total
        kh, kw = module.kernel_size
        total += output.numel() * (module.in_channels // module.groups) * kh * kw

    handles = [m.register_forward_hook(hook) for m in meta.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        meta(torch.empty(1, *input_shape, device="meta"))
    for h in handles:
        h.remove()
    return total


def object_sizes(dataset, n: int = 200, augment: dict | None = None, seed: int = 0) -> np.ndarray:
    """Sizes sqrt(box area / image area) of the objects of the first ``n`` images of ``dataset``,
    as the network sees them: after ``SSDAugmentation(**augment)`` when ``augment`` is given (one
    seeded draw per image), else as rendered. A loop over images: a diagnostic, not hot."""
    from ssd_lib.augment import SSDAugmentation

    aug = SSDAugmentation(size=dataset.image_size, **augment) if augment is not None else None
    sizes = []
    for i in range(min(n, len(dataset))):
        image, target = dataset[i]
        if aug is not None:
            image, target = aug(image, target, generator=torch.Generator().manual_seed(seed * 1_000_003 + i))
        sizes.append(box_size(target["boxes"].float(), tuple(image.shape[-2:])).numpy())
    return np.concatenate(sizes) if sizes else np.zeros(0)


# ---------------------------------------------------------------- one run

@dataclass(frozen=True)
class Settings:
    """What every run of one ablation study shares (stored in the JSON)."""

    image_size: int = 128
    steps: int = 300
    batch_size: int = 32
    test_images: int = 300
    data_seed: int = 0
    vgg_image_size: int = 300
    vgg_repeats: int = 3
    threads: int = 1


@torch.no_grad()
def _inference_speed(model: SSD, images: list[Tensor], batch_size: int = 32) -> float:
    """Images/s of ``predict`` (resize, normalise, forward, decode + NMS), one warm-up batch first."""
    from ssd_lib.evaluate import predict

    predict(model, images[:batch_size])
    t0 = time.perf_counter()
    for start in range(0, len(images), batch_size):
        predict(model, images[start:start + batch_size])
    return len(images) / (time.perf_counter() - t0)


def run_one(variant: str, seed: int, settings: Settings = Settings(), log: Callable[[str], None] = print) -> dict:
    """Train and evaluate one variant with one seed (or time the VGG fc networks for ``non_atrous``)."""
    v = _variant(variant)
    torch.set_num_threads(settings.threads)
    t_start = time.perf_counter()
    if not v.trained:
        speed = vgg_fc_speed(settings.vgg_image_size, repeats=settings.vgg_repeats, seed=seed)
        log(f"[{variant} seed {seed}] images/s through fc7 at {settings.vgg_image_size}px: "
            + ", ".join(f"{k} {s['images_per_s']:.2f}" for k, s in speed.items()))
        return {"variant": variant, "seed": seed, "speed": speed,
                "slowdown_non_atrous": speed["atrous"]["images_per_s"] / speed["non_atrous"]["images_per_s"] - 1,
                "wall_s": time.perf_counter() - t_start}

    from ssd_lib.data import ShapesDataset
    from ssd_lib.evaluate import evaluate_model
    from ssd_lib.train import TrainConfig, train

    train_ds = ShapesDataset("train", size=settings.steps * settings.batch_size, seed=settings.data_seed,
                             image_size=settings.image_size)
    test_ds = ShapesDataset("test", size=settings.test_images, seed=settings.data_seed, image_size=settings.image_size)
    num_classes = len(train_ds.classes) + 1
    torch.manual_seed(seed)
    model = build_variant_model(variant, num_classes, settings.image_size)
    cfg = TrainConfig.small_cpu(seed=seed, batch_size=settings.batch_size, augment=dict(v.augment),
                                warmup_steps=min(100, max(1, settings.steps // 5)), cpu_threads=settings.threads,
                                log_every=max(1, settings.steps // 4), device="cpu")
    t0 = time.perf_counter()
    result = train(model, train_ds, None, cfg, progress=False)
    train_s = time.perf_counter() - t0
    model = result.model.eval()
    res = evaluate_model(model, test_ds, batch_size=50, device="cpu", return_detections=True)
    hw = [(settings.image_size, settings.image_size)] * len(test_ds)
    by_size = size_stratified_map(res["detections"], res["ground_truths"], hw, test_ds.classes)
    images = [test_ds[i][0] for i in range(min(64, len(test_ds)))]
    ips = _inference_speed(model, images)
    rec = {
        "variant": variant, "seed": seed, "mAP": float(res["mAP"]),
        **{f"mAP_{k}": r["mAP"] for k, r in by_size.items()},
        "num_objects": {k: r["num_objects"] for k, r in by_size.items()},
        "ap_per_class": dict(zip(test_ds.classes, [float(a) for a in res["ap"]])),
        "train_s": train_s, "train_images_per_s": settings.steps * settings.batch_size / train_s,
        "inference_images_per_s": ips, "final_loss": result.history[-1]["loss"] if result.history else None,
        "wall_s": time.perf_counter() - t_start,
    }
    log(f"[{variant} seed {seed}] mAP {rec['mAP']:.4f} (small {rec['mAP_small']:.3f}, medium {rec['mAP_medium']:.3f}, "
        f"large {rec['mAP_large']:.3f}); train {train_s:.0f} s; inference {ips:.1f} images/s")
    return rec


def _describe_variant(name: str, num_classes: int, image_size: int) -> dict:
    v = _variant(name)
    d = {"description": v.description, "claim": v.claim, "paper_map": v.paper_map, "paper_note": v.paper_note,
         "augment": dict(v.augment), "trained": v.trained}
    if v.trained:
        model = build_variant_model(name, num_classes, image_size)
        pc = model.prior_config
        d.update(boxes_per_location=list(pc.boxes_per_location), feature_maps=list(pc.feature_maps),
                 num_source_maps=len(set(pc.feature_maps)), num_priors=pc.num_priors,
                 parameters=count_parameters(model))
    return d


# ---------------------------------------------------------------- the study

def _plain(value):
    """NaN and infinity become None: strict JSON has no NaN (an AP with no object to find is undefined)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _write_json(path: Path, data: dict) -> None:
    write_text(path, json.dumps(_plain(data), indent=1, allow_nan=False))  # atomic: old file or new, never half


def _worker(args: tuple) -> dict:
    variant, seed, settings = args
    return run_one(variant, seed, settings, log=lambda s: print(s, flush=True))


def run_ablations(variants: Sequence[str], seeds: Sequence[int], settings: Settings, out: str | Path,
                  jobs: int = 1, command: str | None = None, resume: bool = False,
                  log: Callable[[str], None] = print) -> dict:
    """Run every (variant, seed) and write ``out`` (JSON) atomically after each finished run, so an
    interrupted study leaves its finished runs (``complete`` says whether all planned runs are in).
    ``jobs`` > 1 runs that many in parallel processes (timings then share the CPU).
    ``resume``: keep the runs already in ``out`` when its settings are the same, and skip them."""
    for name in variants:
        _variant(name)
    out = Path(out)
    from ssd_lib.data import ShapesConfig

    num_classes = len(ShapesConfig().classes) + 1
    planned = [(v, s) for s in seeds for v in variants]  # seed-major: a partial study has whole seeds first
    data = {
        "format": "ssd_lib.ablations/1",
        "command": command or f"python -m ssd_lib.course.ablations --variants {' '.join(variants)} --seeds "
                              f"{' '.join(map(str, seeds))} --steps {settings.steps} --out {out}",
        "machine": machine_info(torch.device("cpu")),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "settings": asdict(settings),
        "size_bins": {k: [lo, None if math.isinf(hi) else hi] for k, (lo, hi) in SIZE_BINS.items()},
        "size_measure": "sqrt(box area / image area): the object's side as a fraction of the image side",
        "train_config": "TrainConfig.small_cpu(seed, batch_size, augment=variant's, warmup_steps=min(100, steps // 5)); "
                        "one epoch of steps * batch_size fresh training images",
        "variants": {name: _describe_variant(name, num_classes, settings.image_size) for name in variants},
        "planned": [[v, s] for v, s in planned],
        "runs": [],
        "complete": False,
    }
    if resume and out.is_file():
        old = json.loads(out.read_text())
        if old.get("settings") == data["settings"]:
            data["runs"] = [r for r in old.get("runs", []) if [r["variant"], r["seed"]] in data["planned"]]
            data["date"] = old.get("date", data["date"])
    done = {(r["variant"], r["seed"]) for r in data["runs"]}
    todo = [(v, s) for v, s in planned if (v, s) not in done]
    log(f"{len(planned)} runs planned, {len(todo)} to do, {jobs} at a time; writing {out}")
    _write_json(out, data)

    def finished(rec: dict) -> None:
        data["runs"].append(rec)
        data["runs"].sort(key=lambda r: planned.index((r["variant"], r["seed"])))
        data["complete"] = len(data["runs"]) == len(planned)
        data["finished"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        _write_json(out, data)
        log(f"{len(data['runs'])}/{len(planned)} runs in {out}")

    if jobs <= 1:
        for v, s in todo:
            finished(run_one(v, s, settings, log=log))
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as pool:
            futures = {pool.submit(_worker, (v, s, settings)): (v, s) for v, s in todo}
            for fut in as_completed(futures):
                try:
                    finished(fut.result())
                except Exception as exc:  # one failed run must not throw away the others still running
                    v, s = futures[fut]
                    data.setdefault("errors", []).append({"variant": v, "seed": s, "error": f"{type(exc).__name__}: {exc}"})
                    _write_json(out, data)
                    log(f"[{v} seed {s}] FAILED: {type(exc).__name__}: {exc}")
    return data


# ---------------------------------------------------------------- reading results

def summarize(data: dict, metric: str = "mAP") -> dict[str, dict]:
    """Per variant: mean, sample std, min, max and the seeds of ``metric`` over its runs."""
    out: dict[str, dict] = {}
    for name in data.get("variants", {}):
        runs = [r for r in data.get("runs", []) if r["variant"] == name and r.get(metric) is not None
                and math.isfinite(r[metric])]
        values = np.array([r[metric] for r in runs], dtype=float)
        if len(values) == 0:
            continue
        out[name] = {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else float("nan"),
                     "min": float(values.min()), "max": float(values.max()), "n": len(values),
                     "seeds": [r["seed"] for r in runs]}
    return out


def compare_runs(baseline: Sequence[float], variant: Sequence[float], k: float = 2.0) -> tuple[float, float, bool]:
    """Is a variant's effect larger than the seed-to-seed noise? ``baseline``, ``variant``: one
    metric value per seed (at least 2 each).

    Returns ``(difference, noise, within_noise)``: difference = mean(variant) - mean(baseline);
    noise = k * sqrt(s_b^2 / n_b + s_v^2 / n_v), k standard errors of that difference, with s the
    sample standard deviation (ddof=1); within_noise = |difference| <= noise. With k = 2 this is a
    rule of thumb (about a 95% interval for many seeds; with 3 seeds a t-test would ask for more).
    """
    b, v = np.asarray(baseline, dtype=float), np.asarray(variant, dtype=float)
    if b.size < 2 or v.size < 2:
        raise ValueError(f"compare_runs needs at least 2 values (seeds) per side; got {b.size} and {v.size}")
    difference = float(v.mean() - b.mean())
    noise = float(k * math.sqrt(b.var(ddof=1) / b.size + v.var(ddof=1) / v.size))
    return difference, noise, abs(difference) <= noise


# ---------------------------------------------------------------- command line

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ssd_lib.course.ablations",
                                description="Re-run the SSD paper's ablations on the small model and the built-in data.")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS),
                   help="which variants (default: all)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="seeds per variant (default 0 1 2)")
    p.add_argument("--steps", type=int, default=Settings.steps, help="training steps per run")
    p.add_argument("--batch-size", type=int, default=Settings.batch_size)
    p.add_argument("--image-size", type=int, default=Settings.image_size, help="input side of the small model")
    p.add_argument("--test-images", type=int, default=Settings.test_images, help="test-split images to evaluate")
    p.add_argument("--data-seed", type=int, default=Settings.data_seed, help="seed of the built-in dataset")
    p.add_argument("--vgg-image-size", type=int, default=Settings.vgg_image_size, help="input side for the atrous timing")
    p.add_argument("--vgg-repeats", type=int, default=Settings.vgg_repeats, help="timed rounds for the atrous timing")
    p.add_argument("--threads", type=int, default=None, help="compute threads per run (default: OMP_NUM_THREADS or 1)")
    p.add_argument("--jobs", type=int, default=1, help="runs in parallel (processes)")
    p.add_argument("--resume", action="store_true", help="keep finished runs already in --out (same settings)")
    p.add_argument("--out", default="assets/ablations.json", help="JSON file to write (after every run)")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    if args.steps < 1 or args.batch_size < 1 or args.test_images < 1 or args.jobs < 1:
        print("error: --steps, --batch-size, --test-images and --jobs must be >= 1", file=sys.stderr)
        return 2
    threads = args.threads or int(os.environ.get("OMP_NUM_THREADS", "1") or 1)
    settings = Settings(image_size=args.image_size, steps=args.steps, batch_size=args.batch_size,
                        test_images=args.test_images, data_seed=args.data_seed, vgg_image_size=args.vgg_image_size,
                        vgg_repeats=args.vgg_repeats, threads=threads)
    command = "python -m ssd_lib.course.ablations " + shlex.join(argv)
    try:
        data = run_ablations(args.variants, args.seeds, settings, args.out, jobs=args.jobs, command=command,
                             resume=args.resume, log=lambda s: print(s, flush=True))
    except ValueError as exc:
        print(f"error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    for name, s in summarize(data).items():
        print(f"{name:>16s}: mAP {s['mean']:.4f} +- {s['std']:.4f} (min {s['min']:.4f}, max {s['max']:.4f}, n={s['n']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
