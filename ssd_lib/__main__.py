"""Command line: ``python -m ssd_lib main|train|eval|detect|export|render|check-data``, plus the commands that
packages register under the ``ssd_lib.commands`` entry-point group: the course adds ``grade``,
``doctor`` and ``html`` (pyproject.toml), so this module knows nothing of the course. ``--help`` on
each explains it.

    python -m ssd_lib main                                  # train the small SSD on the built-in shapes, evaluate, draw
    python -m ssd_lib train --dataset voc --data-root ~/data/VOCdevkit --model ssd300 --device cuda
    python -m ssd_lib eval --checkpoint runs/main/last.pt --coco
    python -m ssd_lib detect --checkpoint runs/main/last.pt --images photos/ --out results/detections
    python -m ssd_lib export --checkpoint runs/main/last.pt --output model.onnx --int8   # ONNX (deploy extra)
    python -m ssd_lib detect photos/ --onnx model.onnx --json detections.json          # ONNX Runtime
    python -m ssd_lib check-data --dataset voc --data-root ~/data/VOCdevkit           # bad boxes, missing images
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable

from ssd_lib.cli import (MAIN_TRAIN_IMAGES, SKIPPED_IMAGES_STATUS, CLIError, cmd_check_data, cmd_detect, cmd_eval,
                         cmd_export, cmd_main, cmd_render, cmd_train)

PLUGIN_GROUP = "ssd_lib.commands"  # entry points: more subcommands (the course's grade, doctor, html)


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", choices=["shapes", "voc", "coco"], default="shapes",
                   help="shapes: the built-in generated dataset (default, no files needed); voc: a VOCdevkit folder; "
                        "coco: a COCO folder (train2017/, val2017/, annotations/)")
    p.add_argument("--data-root", help="dataset folder for voc/coco")
    p.add_argument("--year", default="2007", help="VOC year (default 2007)")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the built-in dataset (default 0)")
    p.add_argument("--test-size", type=int, default=None, help="number of built-in test images (default 500)")
    p.add_argument("--train-size", type=int, default=None,
                   help="number of built-in training images (default 10000; every index is a new generated image)")
    p.add_argument("--val-size", type=int, default=None, help="number of built-in validation images (default 500)")


def _add_data_commands(sub) -> None:
    """The subcommands for dataset files: ``check-data`` (:mod:`ssd_lib.data.check`) and ``render``."""
    p = sub.add_parser("check-data", help="list the problems of a VOC or COCO folder's files: inverted, empty or "
                                          "outside boxes, unknown class names, missing or unreadable images",
                       epilog="prints one 'path: problem' line per problem, then a summary. Exit status: 0 when "
                              "none was found; 1 (ssd_lib.data.check.DATA_PROBLEMS_STATUS) when some were; 2 for a "
                              "usage error (a --data-root or --split that does not exist)")
    p.add_argument("--dataset", choices=["voc", "coco"], required=True)
    p.add_argument("--data-root", required=True,
                   help="voc: the VOCdevkit folder (or the one holding it, or VOC<year>); coco: the folder holding "
                        "train2017/, val2017/ and annotations/instances_<split>.json")
    p.add_argument("--year", default="2007", help="VOC year (default 2007)")
    p.add_argument("--split", help="VOC image set (trainval, test, ...) or COCO folder (train2017, val2017); default: "
                                   "the ones train and eval read (voc: trainval and test; coco: train2017 and "
                                   "val2017), those present")
    p.add_argument("--classes", help="voc: the class names, comma-separated (default: the 20 VOC classes, which "
                                     "train and eval use)")
    p.add_argument("--skip-images", action="store_true",
                   help="check the annotation files only, without opening the images")
    p.set_defaults(func=cmd_check_data)
    p = sub.add_parser("render", help="write the built-in dataset to disk in VOC or COCO format (see its --help)",
                       add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_render)


# ---------------------------------------------------------------- parser

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ssd_lib", description="Train, evaluate and run SSD detectors.")
    sub = parser.add_subparsers(dest="command", required=True)

    def train_args(p):
        _add_data_args(p)
        p.add_argument("--model", choices=["small", "ssd300", "ssd512"], default="small",
                       help="small: the course's CPU model (default); ssd300/ssd512: the paper's VGG16 models (use a GPU)")
        p.add_argument("--image-size", type=int, default=128, help="input side of the small model (default 128)")
        p.add_argument("--stride4-map", action=argparse.BooleanOptionalAction, default=True,
                       help="small model: add a stride-4 source map with 7.7 and 9.9 px default boxes for tiny objects "
                            "(default on; the 2900-step main job measured test mAP 0.9125 with it, 0.894 without, in the same training time: "
                            "README); --no-stride4-map gives the lessons' five maps")
        p.add_argument("--background-prior", type=float, default=0.99,
                       help="start the class logits at this background probability (SSD.init_background_prior; "
                            "default 0.99, which reached mAP 0.90 in half the steps: README); 0 starts all classes equal")
        p.add_argument("--epochs", type=int, help="passes over the training set (default: the preset's)")
        p.add_argument("--batch-size", type=int, help="images per step (default 32; the small model's BatchNorm needs at least 2)")
        p.add_argument("--lr", type=float, help="base learning rate (default: 5e-3 with AdamW for small, 1e-3 with SGD for ssd300/512)")
        p.add_argument("--warmup", type=int, help="linear warm-up steps")
        p.add_argument("--max-steps", type=int, help="cap the steps per epoch (quick runs)")
        p.add_argument("--workers", type=int, help="data-loading worker processes")
        p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda if available, else cpu)")
        p.add_argument("--compile", action="store_true", help="torch.compile the model (GPU)")
        p.add_argument("--eval-every", type=int, help="evaluate on the validation split every N epochs (0 = never)")
        p.add_argument("--eval-batch-size", type=int, default=64)
        p.add_argument("--seed", type=int, default=0, help="seed for initialisation, data order and augmentation")
        p.add_argument("--out", default="runs/main", help="folder for checkpoints, metrics.jsonl and curves.png")
        p.add_argument("--resume", help="continue from this checkpoint (e.g. runs/main/last.pt)")
        p.add_argument("--quiet", action="store_true", help="no progress bars")
        p.add_argument("--coco", action="store_true",
                       help="also report COCO AP (pycocotools), in OUT/eval.json (train: on the validation split "
                            "after training; main: on the test split)")

    p = sub.add_parser("main", help="train the small SSD on the built-in dataset, evaluate on its test split, draw detections")
    train_args(p)
    p.set_defaults(func=cmd_main, out="results/main", train_size=MAIN_TRAIN_IMAGES)
    p = sub.add_parser("train", help="train a model")
    train_args(p)
    p.set_defaults(func=cmd_train)
    p = sub.add_parser("eval", help="evaluate a checkpoint (VOC mAP@0.5, optionally COCO AP)")
    _add_data_args(p)
    p.add_argument("--checkpoint", required=True, help="a .pt file written by train")
    p.add_argument("--split", choices=["val", "test"], default="test")
    p.add_argument("--coco", action="store_true", help="also report COCO AP (pycocotools)")
    p.add_argument("--eval-batch-size", type=int, default=64)
    p.add_argument("--device", help="cpu or cuda")
    p.add_argument("--out", help="folder to write eval.json (VOC AP per class, and with --coco the COCO AP and AR; "
                                 "null where a metric is undefined)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_eval)
    p = sub.add_parser("detect", help="draw detections on image files into PNGs (PyTorch or ONNX Runtime)",
                       epilog=f"exit status: 0 when every image was drawn; 2 for a usage error (nothing drawn); "
                              f"{SKIPPED_IMAGES_STATUS} when some image files could not be read (truncated, corrupt, "
                              "not an image): each is skipped with a warning on stderr, the others are drawn, and "
                              "--json lists them under \"skipped\"")
    p.add_argument("images", nargs="+", help="image files or folders")
    p.add_argument("--checkpoint", help="a .pt file written by train (default: the course model, assets/ssd_small_shapes.pt)")
    p.add_argument("--onnx", help="run this ONNX file (from `export`) with ONNX Runtime instead of PyTorch")
    p.add_argument("--json", help="also write the detections to this JSON file (per image: file, boxes in pixel "
                                  "xyxy, scores, labels, class names)")
    p.add_argument("--out", default="results/detections", help="folder for the PNGs")
    p.add_argument("--score-threshold", type=float, default=0.3,
                   help="draw detections with at least this score, in [0, 1] (default 0.3)")
    p.set_defaults(func=cmd_detect)
    p = sub.add_parser("export", help="export a checkpoint to ONNX, checked against PyTorch (needs the deploy extra)")
    p.add_argument("--checkpoint", help="a .pt file written by train (default: the course model, assets/ssd_small_shapes.pt)")
    p.add_argument("--output", default="model.onnx", help="the ONNX file to write (default model.onnx)")
    p.add_argument("--decode", action="store_true",
                   help="put decoding and softmax in the graph (outputs boxes, scores instead of loc, logits)")
    p.add_argument("--int8", action="store_true", help="also write OUTPUT.int8.onnx, statically quantised to int8")
    p.add_argument("--calibration", help="folder of images to calibrate the int8 model (default: the built-in training split)")
    p.add_argument("--calibration-size", type=int, default=100, help="number of calibration images (default 100)")
    p.set_defaults(func=cmd_export)
    _add_data_commands(sub)
    for name, command in plugin_commands().items():  # e.g. the course's grade, doctor, html
        p = sub.add_parser(name, help=command.description() + " (see its --help)", add_help=False)
        p.add_argument("rest", nargs=argparse.REMAINDER)
        p.set_defaults(func=lambda args, command=command: command(args.rest))
    return parser


def plugin_commands() -> dict[str, Callable[[list[str]], int]]:
    """The commands registered under the ``ssd_lib.commands`` entry points: ``{name: fn(argv) -> exit status}``.
    The course registers ``grade``, ``doctor`` and ``html`` (see pyproject.toml)."""
    from importlib.metadata import entry_points

    return {ep.name: _LazyCommand(ep) for ep in sorted(entry_points(group=PLUGIN_GROUP), key=lambda ep: ep.name)}


class _LazyCommand:
    """An entry point loaded when it runs (or when ``--help`` asks for its description)."""

    def __init__(self, entry_point) -> None:
        self.entry_point = entry_point

    def __call__(self, argv: list[str]) -> int:
        return self.entry_point.load()(argv)

    def description(self) -> str:
        """The first line of the command's docstring (for ``--help``)."""
        try:
            doc = (self.entry_point.load().__doc__ or "").strip()
        except ImportError as exc:  # an extra that is not installed
            return f"unavailable here ({exc})"
        line = doc.splitlines()[0].rstrip(".") if doc else ""
        return line[:1].lower() + line[1:]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    passthrough = {"render", *plugin_commands()}
    if argv[:1] and argv[0] in passthrough:
        # argparse.REMAINDER does not take a first argument that starts with '-' (render --format voc ...):
        # everything after the subcommand goes to its own parser as it is.
        args = build_parser().parse_args(argv[:1])
        args.rest = argv[1:]
    else:
        args = build_parser().parse_args(argv)
    from ssd_lib.train import NonFiniteLossError

    try:
        status = args.func(args)
    except (CLIError, ValueError, OSError, NonFiniteLossError) as exc:  # OSError: a file that cannot be read or written
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"error: {message}", file=sys.stderr)
        return 2
    # The plugins, detect (SKIPPED_IMAGES_STATUS) and check-data (DATA_PROBLEMS_STATUS) return their exit status;
    # the other commands' results are not one.
    return status if args.command in (passthrough - {"render"}) | {"detect", "check-data"} else 0


if __name__ == "__main__":
    sys.exit(main())
