"""Render the built-in Shapes dataset to disk as a VOCdevkit tree or as COCO images + JSON.

Usage::

    python -m ssd_lib.data --format voc  --split test --n 50 --out data/shapes_voc
    python -m ssd_lib.data --format coco --split val  --n 50 --out data/shapes_coco
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .export import write_coco, write_voc
from .shapes import DEFAULT_SPLIT_SIZES, ShapesConfig, ShapesDataset


def build_parser(prog: str = "python -m ssd_lib.data") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Render ShapesDataset images and their boxes to disk, in PASCAL VOC or COCO format, "
                    "so that they can be read back with VOCDataset / COCODataset or any annotation viewer.",
        epilog="voc writes OUT/VOC2007/{JPEGImages,Annotations,ImageSets/Main/SPLIT.txt}; "
               "coco writes OUT/SPLIT/*.jpg and OUT/annotations/instances_SPLIT.json.")
    parser.add_argument("--format", choices=["voc", "coco"], required=True, help="output format")
    parser.add_argument("--split", choices=sorted(DEFAULT_SPLIT_SIZES), default="test",
                        help="which Shapes split to render (default: test)")
    parser.add_argument("--n", type=int, default=50, help="number of images to write (default: 50)")
    parser.add_argument("--out", type=Path, required=True, help="output folder (created if missing)")
    parser.add_argument("--seed", type=int, default=0, help="dataset seed (default: 0)")
    parser.add_argument("--image-size", type=int, default=256, help="image side in pixels (default: 256)")
    parser.add_argument("--preset", choices=["default", "easy", "hard"], default="default",
                        help="ShapesConfig preset (default: default)")
    return parser


def main(argv: list[str] | None = None, prog: str = "python -m ssd_lib.data") -> int:
    args = build_parser(prog).parse_args(argv)
    if args.n < 0:
        raise SystemExit("--n must be >= 0")
    config = getattr(ShapesConfig, args.preset)()
    dataset = ShapesDataset(args.split, size=max(args.n, 1), seed=args.seed, image_size=args.image_size,
                            config=config)
    if args.format == "voc":
        where = write_voc(dataset, args.out, year="2007", image_set=args.split, n=args.n)
        print(f"wrote {args.n} images to {where} (read back with "
              f"VOCDataset({str(args.out)!r}, image_set={args.split!r}, classes={dataset.classes}))")
    else:
        json_path = write_coco(dataset, args.out / args.split, args.out / "annotations" / f"instances_{args.split}.json",
                               n=args.n)
        print(f"wrote {args.n} images to {args.out / args.split} and {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
