"""The library's commands: ``main``, ``train``, ``eval``, ``detect``, ``export``, ``render``, ``check-data``.

Each ``cmd_*`` takes the parsed arguments of ``python -m ssd_lib`` (the parser and the dispatch are
in ``ssd_lib/__main__.py``) and raises :class:`CLIError` for a user's mistake, which the command line
prints as one line with exit status 2. ``detect`` skips an image file it cannot read with a one-line
warning, draws the others, and exits with :data:`SKIPPED_IMAGES_STATUS` (3); ``check-data`` with 1 on problems.

Usage::

    python -m ssd_lib main                  # train the small SSD on the built-in shapes, evaluate, draw
    python -m ssd_lib eval --checkpoint runs/main/last.pt --coco
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import replace
from pathlib import Path

# The main job draws this many fresh training images (one epoch): 1800 steps of 32 with the stride-4 map and the
# background prior, bf16 on CPU; under 5 minutes of training on two cores (README: measured mAP and time).
MAIN_TRAIN_IMAGES = 1800 * 32

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


# `detect`'s exit status when some image files could not be read: they were skipped, the others drawn.
SKIPPED_IMAGES_STATUS = 3


class CLIError(Exception):
    """A user mistake: printed as one line, exit status 2."""


# ---------------------------------------------------------------- checking the options

# Integer options and their smallest sensible value (argparse checks only that they are integers).
_INT_MINIMUMS = {"batch_size": 1, "eval_batch_size": 1, "epochs": 1, "max_steps": 1, "warmup": 0, "workers": 0,
                 "eval_every": 0, "train_size": 1, "val_size": 1, "test_size": 1, "calibration_size": 1}
_UNIT_INTERVAL = {"score_threshold": "a class score", "nms_threshold": "an IoU", "background_prior": "a probability"}


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_options(args) -> None:
    """A one-line CLIError for a number option out of its range, before any work starts."""
    for name, minimum in _INT_MINIMUMS.items():
        value = getattr(args, name, None)
        if value is not None and value < minimum:
            raise CLIError(f"{_option(name)} must be at least {minimum}; got {value}")
    for name, what in _UNIT_INTERVAL.items():
        value = getattr(args, name, None)
        if value is not None and not 0.0 <= value <= 1.0:  # also refuses NaN
            raise CLIError(f"{_option(name)} must be between 0 and 1 ({what}); got {value}")
    lr = getattr(args, "lr", None)
    if lr is not None and not lr > 0:
        raise CLIError(f"--lr must be a positive learning rate; got {lr}")


def _check_batches(model, cfg, num_train_images: int) -> None:
    """BatchNorm cannot normalise one image per channel in training (PyTorch's "Expected more than 1
    value per channel when training"): refuse a batch size of 1, or an epoch whose last batch holds a
    single image, before training starts rather than at the end of an epoch."""
    from torch import nn

    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return
    if cfg.batch_size < 2:
        raise CLIError(f"--batch-size {cfg.batch_size}: the model's BatchNorm layers need at least 2 images per "
                       "batch in training; use --batch-size 2 or more")
    world = int(os.environ.get("WORLD_SIZE", "1"))  # torchrun: each rank draws its share of the epoch
    per_rank = -(-num_train_images // world)
    full_epoch = cfg.max_steps_per_epoch is None or -(-per_rank // cfg.batch_size) <= cfg.max_steps_per_epoch
    if full_epoch and per_rank % cfg.batch_size == 1:
        raise CLIError(f"the last batch of each epoch would hold 1 image ({per_rank} training images per process, "
                       f"--batch-size {cfg.batch_size}), but BatchNorm needs at least 2 per batch; choose a "
                       "--batch-size that does not leave 1 image over")


# ---------------------------------------------------------------- datasets and models

def _datasets(args, split: str, image_size: int = 256):
    from ssd_lib.data import COCODataset, ShapesDataset, VOCDataset

    if args.dataset == "shapes":
        size = getattr(args, f"{split}_size", None)
        # The built-in images are rendered at the model's input size (no resampling blur).
        return ShapesDataset(split=split, size=size, seed=args.data_seed, image_size=image_size)
    if args.dataset == "voc":
        if not args.data_root:
            raise CLIError("--dataset voc needs --data-root (the VOCdevkit folder)")
        image_set = {"train": "trainval", "val": "test", "test": "test"}[split]
        return VOCDataset(args.data_root, year=args.year, image_set=image_set)
    if args.dataset == "coco":
        if not args.data_root:
            raise CLIError("--dataset coco needs --data-root (with images/ folders and annotations/)")
        root = Path(args.data_root)
        name = {"train": "train2017", "val": "val2017", "test": "val2017"}[split]
        return COCODataset(root / name, root / "annotations" / f"instances_{name}.json", skip_crowd=split == "train")
    raise CLIError(f"unknown dataset {args.dataset!r}")


def _class_names(args, split: str = "train") -> list[str]:
    """Class names of the chosen dataset, read from ``split`` (the built-in one's without building it)."""
    if args.dataset == "shapes":
        from ssd_lib.data import ShapesConfig

        return list(ShapesConfig().classes)
    return list(_datasets(args, split).classes)


def model_config(args, num_classes: int):
    from ssd_lib.model import ModelConfig
    from ssd_lib.priors import PriorConfig

    if args.model == "small":
        return ModelConfig.small(num_classes, image_size=args.image_size,
                                 **({"stride4_source": True} if args.stride4_map else {}))
    if args.model == "ssd300":
        return ModelConfig("ssd300", num_classes, PriorConfig.ssd300())
    if args.model == "ssd512":
        return ModelConfig("ssd512", num_classes, PriorConfig.ssd512())
    raise CLIError(f"unknown model {args.model!r}")


# ---------------------------------------------------------------- commands

def cmd_train(args, evaluate_after: bool = True) -> dict:
    """Train; with ``--coco`` (and ``evaluate_after``; ``main`` evaluates the test split itself) the
    trained model is then evaluated on the validation split and ``OUT/eval.json`` written."""
    import torch

    from ssd_lib.model import build_model
    from ssd_lib.train import TrainConfig, train

    check_options(args)
    num_classes = len(_class_names(args)) + 1
    if args.resume:
        model = _load_model(args.resume, num_classes=num_classes)[0].train()
    else:
        torch.manual_seed(args.seed)
        model = build_model(model_config(args, num_classes))
        if args.background_prior:  # 0: the plain zero-bias start
            model.init_background_prior(args.background_prior)
    size = model.prior_config.image_size
    train_ds = _datasets(args, "train", size)
    val_ds = _datasets(args, "val", size)
    base = TrainConfig.small_cpu() if args.model == "small" else TrainConfig.released()
    overrides = {k: v for k, v in dict(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, device=args.device, num_workers=args.workers,
        compile=args.compile or None, eval_every=args.eval_every, seed=args.seed, warmup_steps=args.warmup,
        max_steps_per_epoch=args.max_steps).items() if v is not None}
    cfg = replace(base, **overrides)
    _check_batches(model, cfg, len(train_ds))
    t0 = time.perf_counter()
    result = train(model, train_ds, val_ds, cfg, out_dir=args.out, resume=args.resume, progress=not args.quiet)
    minutes = (time.perf_counter() - t0) / 60
    if result.interrupted:
        print(f"interrupted: checkpoint saved to {Path(args.out) / 'last.pt'}; continue with --resume {Path(args.out) / 'last.pt'}")
    else:
        print(f"trained {cfg.epochs} epochs in {minutes:.1f} min; checkpoint {Path(args.out) / 'last.pt'}")
    if args.coco and evaluate_after and not result.interrupted:
        print(f"validation split ({len(val_ds)} images):")
        _evaluate_and_report(result.model, val_ds, args, Path(args.out))
    return {"result": result, "minutes": minutes, "config": cfg}


def _evaluate_and_report(model, dataset, args, out_dir: Path | None) -> dict:
    from ssd_lib.evaluate import evaluate_model

    res = evaluate_model(model, dataset, batch_size=args.eval_batch_size, coco=args.coco, progress=not args.quiet,
                         device=args.device, return_detections=True)
    names = list(dataset.classes)
    print(f"VOC mAP@0.5 (11-point, VOC2007) on {len(dataset)} images: {res['mAP']:.4f}")
    for name, ap in zip(names, res["ap"]):
        print(f"  {name:>14s}: {ap:.4f}")
    if args.coco:
        c = res["coco"]
        print(f"COCO AP {c['AP']:.4f}  AP50 {c['AP50']:.4f}  AP75 {c['AP75']:.4f}  "
              f"APs {c['APs']:.4f}  APm {c['APm']:.4f}  APl {c['APl']:.4f}")
    if out_dir is not None:
        summary = {"mAP": _json_number(res["mAP"]), "ap": dict(zip(names, map(_json_number, res["ap"]))),
                   "num_images": len(dataset)}
        if args.coco:
            summary["coco"] = _coco_summary(res["coco"])
        from ssd_lib.files import write_json

        print(f"results written to {write_json(out_dir / 'eval.json', summary)}")
    return res


def _json_number(value) -> float | None:
    """A metric for a JSON file: a float, or null where it is undefined (NaN is not JSON)."""
    value = float(value)
    return value if value == value else None


def _coco_summary(coco: dict) -> dict:
    """:func:`ssd_lib.metrics.evaluate_coco`'s result for a JSON file: the 12 numbers of
    ``COCOeval.summarize`` by name (AP, AP50, ..., ARl; null where undefined) and ``ap_per_class``
    (AP 0.50:0.95 by class name). The raw ``stats`` array repeats the 12 numbers and is left out."""
    summary = {name: _json_number(value) for name, value in coco.items() if isinstance(value, float)}
    summary["ap_per_class"] = dict(zip(coco["class_names"], map(_json_number, coco["ap_per_class"])))
    return summary


def _draw_examples(model, dataset, res, out_path: Path, n: int = 8) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ssd_lib.viz import plot_detections

    n = min(n, len(dataset))
    images = [dataset[i][0] for i in range(n)]
    fig = plot_detections(images, res["detections"][:n], class_names=dataset.classes, targets=res["ground_truths"][:n],
                          title="SSD detections on test images (dashed white: ground truth)", path=out_path)
    plt.close(fig)
    return out_path


def cmd_eval(args) -> dict:
    check_options(args)
    # VOC and COCO files: the class names come from the split being evaluated (a COCO user often has
    # val2017 only); the built-in images are rendered at the model's input size, so they wait for it.
    ds = None if args.dataset == "shapes" else _datasets(args, args.split)
    names = _class_names(args) if ds is None else list(ds.classes)
    model = _load_model(args.checkpoint, num_classes=len(names) + 1)[0]
    if ds is None:
        ds = _datasets(args, args.split, model.prior_config.image_size)
    return _evaluate_and_report(model, ds, args, Path(args.out) if args.out else None)


def _load_model(checkpoint: str | None, num_classes: int | None = None):
    """(model in eval mode, class names, source) from a checkpoint, or the shipped model when None;
    ``num_classes``, when given, must be the checkpoint's."""
    from ssd_lib import checkpoint as checkpoints

    path = Path(checkpoint) if checkpoint else checkpoints.SHIPPED_MODEL
    if not checkpoint and not path.is_file():
        raise CLIError(f"no --checkpoint given and the shipped model {path} is missing: restore it "
                       "(git checkout -- assets/) or pass --checkpoint")
    try:
        model, ckpt = checkpoints.model_from_checkpoint(path, num_classes=num_classes)
        class_names = checkpoints.class_names_of(ckpt, model.num_classes)
    except RuntimeError as exc:  # load_state_dict: weights of another configuration or number of classes
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        detail = (lines[1] if len(lines) > 1 else lines[0] if lines else "")[:200]
        raise CLIError(f"checkpoint {path}: its weights do not fit the model configuration stored with them "
                       f"({detail}); use a checkpoint written by ssd_lib's train") from None
    except (KeyError, TypeError) as exc:  # a model_config with missing or wrong entries
        raise CLIError(f"checkpoint {path} has an incomplete model configuration ({exc}); "
                       "use a checkpoint written by ssd_lib's train") from None
    except ValueError as exc:  # unreadable file, or a configuration the model cannot be built from
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CLIError(message if str(path) in message
                       else f"checkpoint {path}: cannot rebuild its model ({message})") from None
    return model.eval(), class_names, path


def _detections_record(path: Path, image, det: dict, class_names: list[str]) -> dict:
    """One image's detections for --json: pixel xyxy boxes, scores, labels (1..C-1) and class names."""
    labels = [int(label) for label in det["labels"]]
    return {"file": str(path), "height": int(image.shape[-2]), "width": int(image.shape[-1]),
            "boxes": [[round(float(v), 3) for v in box] for box in det["boxes"]],
            "scores": [round(float(s), 6) for s in det["scores"]], "labels": labels,
            "class_names": [class_names[label - 1] if 0 < label <= len(class_names) else str(label) for label in labels]}


def cmd_detect(args) -> int:
    """Draw (and with ``--json`` list) the detections of every image; an image file that cannot be read
    is skipped with a one-line warning. Exit status 0, or :data:`SKIPPED_IMAGES_STATUS` when any was skipped."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ssd_lib.data.common import read_image
    from ssd_lib.evaluate import predict
    from ssd_lib.viz import plot_detections

    check_options(args)
    paths: list[Path] = []
    for item in args.images:
        p = Path(item)
        if p.is_dir():
            paths += sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES)
        elif p.is_file():
            paths.append(p)
        else:
            raise CLIError(f"{p} does not exist; pass image files or a folder of images")
    if not paths:
        raise CLIError(f"no images found in {' '.join(args.images)} (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    if args.onnx and args.checkpoint:
        raise CLIError("give --checkpoint (run by PyTorch) or --onnx (run by ONNX Runtime), not both")
    if args.onnx:
        from ssd_lib.export import MissingDeployExtra, OnnxDetector

        try:
            detector = OnnxDetector(args.onnx)
        except MissingDeployExtra as exc:
            raise CLIError(str(exc)) from None
        class_names, source = detector.class_names, Path(args.onnx)
        run = lambda image: detector.predict([image], score_threshold=args.score_threshold)[0]  # noqa: E731
    else:
        model, class_names, source = _load_model(args.checkpoint)
        run = lambda image: predict(model, [image], score_threshold=args.score_threshold)[0]  # noqa: E731
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    written, records, skipped = [], [], []
    for path in paths:
        try:
            image = read_image(path)
        except OSError as exc:  # truncated, corrupt, or not an image: the other files still get drawn
            print(f"warning: {exc}; skipped", file=sys.stderr)
            skipped.append({"file": str(path), "reason": str(exc)})
            continue
        det = run(image)
        fig = plot_detections([image], [det], class_names=class_names, score_threshold=args.score_threshold, ncols=1,
                              title=path.name, path=out / f"{path.stem}_detections.png")
        plt.close(fig)
        written.append(out / f"{path.stem}_detections.png")
        records.append(_detections_record(path, image, det, class_names))
        print(f"{path}: {int((det['scores'] >= args.score_threshold).sum())} detections -> {written[-1]}")
    if args.json:
        report = {"model": str(source), "runtime": "onnxruntime" if args.onnx else "pytorch",
                  "score_threshold": args.score_threshold, "images": records, "skipped": skipped}
        from ssd_lib.files import write_json

        json_path = write_json(args.json, report)  # atomic: never half-written
        print(f"detections of {len(records)} image(s) written to {json_path}")
    if skipped:
        print(f"warning: {len(skipped)} of {len(paths)} image files could not be read and were skipped "
              f"(exit status {SKIPPED_IMAGES_STATUS})", file=sys.stderr)
        return SKIPPED_IMAGES_STATUS
    return 0


def cmd_export(args) -> Path:
    """Export a checkpoint (default: the course model) to ONNX, check it, and compare ONNX Runtime with PyTorch."""
    from ssd_lib.export import (DecodedSSD, MissingDeployExtra, OnnxDetector, export_onnx, onnx_summary, preprocess,
                                quantize_onnx, require_deploy)

    check_options(args)
    try:
        require_deploy("onnx", "onnxruntime", "onnxscript")  # before loading (or training) a model
    except MissingDeployExtra as exc:
        raise CLIError(str(exc)) from None
    import torch

    from ssd_lib.data import ShapesDataset

    model, class_names, source = _load_model(args.checkpoint)
    path = export_onnx(model, args.output, decode_in_graph=args.decode, class_names=class_names)
    summary = onnx_summary(path)
    shapes = lambda d: ", ".join(f"{k} {tuple(v)}" for k, v in d.items())  # noqa: E731
    print(f"exported {source} to {path} ({summary['file_mb']:.1f} MB, {summary['nodes']} operators, opset "
          f"{summary['opset']}): {shapes(summary['inputs'])} -> {shapes(summary['outputs'])}; onnx.checker passed")
    # The same two images through both runtimes: a broken export shows here, not in a user's app.
    size = model.prior_config.image_size
    images = [ShapesDataset("test", size=2, image_size=size)[i][0] for i in range(2)]
    batch = preprocess(images, size)
    detector = OnnxDetector(path)
    with torch.no_grad():
        expected = (DecodedSSD(model) if args.decode else model).eval()(batch)
    got = detector.run_decoded(batch) if args.decode else detector.run(batch)
    error = max(float((a - b).abs().max()) for a, b in zip(expected, got))
    if not error <= 1e-3:
        raise CLIError(f"ONNX Runtime's outputs differ from PyTorch's by {error:.2g} on 2 test images; the export is wrong")
    print(f"ONNX Runtime and PyTorch agree on 2 test images: largest difference {error:.1e}")
    if args.int8:
        int8_path = path.with_name(path.stem + ".int8.onnx")
        if args.calibration:
            from ssd_lib.data.common import read_image

            folder = Path(args.calibration)
            files = sorted(q for q in folder.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []
            if not files:
                raise CLIError(f"--calibration {folder}: no images found; pass a folder of training images")
            try:
                calibration = [read_image(q) for q in files[:args.calibration_size]]
            except OSError as exc:
                raise CLIError(f"--calibration: {exc}; remove or replace that file") from None
        else:
            train = ShapesDataset("train", size=args.calibration_size, image_size=size)
            calibration = [train[i][0] for i in range(len(train))]
        quantize_onnx(path, int8_path, calibration, method="static")
        print(f"int8 (static, calibrated on {len(calibration)} images): {int8_path} "
              f"({onnx_summary(int8_path)['file_mb']:.1f} MB)")
    return path


def cmd_main(args) -> dict:
    """The course's main job: train the small SSD on the built-in dataset, evaluate, draw."""
    from ssd_lib.machine import load_average

    out = Path(args.out)
    t0, load_start = time.perf_counter(), load_average()
    trained = cmd_train(args, evaluate_after=False)
    model = trained["result"].model
    test_ds = _datasets(args, "test", model.prior_config.image_size)
    res = _evaluate_and_report(model, test_ds, args, out)
    picture = _draw_examples(model, test_ds, res, out / "test_detections.png")
    minutes = (time.perf_counter() - t0) / 60
    print(f"test-split VOC mAP@0.5 = {res['mAP']:.4f}; total time {minutes:.1f} min (training {trained['minutes']:.1f} min)")
    print(f"detections drawn to {picture}")
    _write_run_record(args, out, res, minutes, trained, load_start)
    return {"mAP": res["mAP"], "minutes": minutes}


def _write_run_record(args, out: Path, res: dict, minutes: float, trained: dict, load_start) -> Path:
    """``run.json``: what was run, on what, how long it took and what it reached (the model card's source)."""
    from dataclasses import asdict

    import torch

    from ssd_lib.files import write_json
    from ssd_lib.machine import load_average, machine_info

    record = {
        "command": "python -m ssd_lib " + " ".join(sys.argv[1:] if sys.argv[0].endswith("__main__.py") else ["main"]),
        "test_mAP": float(res["mAP"]),
        "test_images": len(res["ground_truths"]),
        "minutes_total": round(minutes, 2),
        "minutes_training": round(trained["minutes"], 2),
        "steps": len(trained["result"].steps) and trained["result"].steps[-1].get("step"),
        "train_config": {k: v for k, v in asdict(trained["config"]).items() if isinstance(v, (int, float, str, bool, type(None)))},
        "machine": {**machine_info(torch.device(args.device or "cpu")), "load_average_start": load_start,
                    "load_average_end": load_average()},
    }
    if "coco" in res:
        record["test_coco"] = _coco_summary(res["coco"])
    return write_json(out / "run.json", record)


def cmd_render(args) -> None:
    from ssd_lib.data.__main__ import main as render_main

    render_main(args.rest, prog="python -m ssd_lib render")


def cmd_check_data(args) -> int:
    """List every problem of a VOC or COCO folder's files (:func:`ssd_lib.data.check.report`); 1 when any."""
    from ssd_lib.data.check import report

    return report(args.dataset, args.data_root, args.year, args.split, args.classes, read_images=not args.skip_images)
