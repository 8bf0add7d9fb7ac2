"""Throughput of ``ssd_lib.augment.SSDAugmentation`` against the same pipeline in torchvision.transforms.v2.

Both pipelines see the same (image, target) samples: ShapesDataset images when ``ssd_lib.data``
provides it, else synthetic 3x256x256 images with random boxes. torchvision's inputs are wrapped
in tv_tensors once, outside the timed loop. Each repeat times every pipeline over all samples
(interleaved, global RNG reseeded identically); we report the median images/s over repeats.

Usage::

    .venv/bin/python benchmarks/bench_augment.py --n 200 --repeats 5
    from benchmarks.bench_augment import run; result = run(n=200, repeats=5)   # a dict
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

import torch
import torchvision
from torchvision import tv_tensors
from torchvision.transforms import v2

# Run as a script from anywhere without installing the package: put the repository root on the path.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ssd_lib.augment import IMAGENET_MEAN, IMAGENET_STD, Compose, Normalize, RandomHorizontalFlip, Resize, SSDAugmentation

Sample = tuple[torch.Tensor, dict]


def synthetic_samples(n: int, seed: int = 0) -> list[Sample]:
    """``n`` random images (3, H, W) with H, W in [224, 288] and 1 to 8 random boxes each."""
    generator = torch.Generator().manual_seed(seed)
    samples = []
    for _ in range(n):  # setup, not timed
        height, width = torch.randint(224, 289, (2,), generator=generator).tolist()
        count = int(torch.randint(1, 9, (1,), generator=generator))
        size = torch.rand(count, 2, generator=generator) * 0.6 + 0.05  # fraction of the side
        corner = torch.rand(count, 2, generator=generator) * (1 - size)
        scale = torch.tensor([width, height], dtype=torch.float32)
        boxes = torch.cat((corner * scale, (corner + size) * scale), dim=1)
        target = {
            "boxes": boxes,
            "labels": torch.randint(1, 21, (count,), generator=generator),
            "difficult": torch.zeros(count, dtype=torch.bool),
        }
        samples.append((torch.rand(3, height, width, generator=generator), target))
    return samples


def load_samples(n: int, seed: int = 0) -> tuple[list[Sample], str]:
    """ShapesDataset's first ``n`` training images if it imports, else ``synthetic_samples``."""
    try:
        try:
            from ssd_lib.data import ShapesDataset
        except ImportError:
            from ssd_lib.data.shapes import ShapesDataset
        dataset = ShapesDataset("train", size=n, seed=seed)
        return [dataset[i] for i in range(n)], f"ShapesDataset (3x{dataset.image_size}x{dataset.image_size})"
    except Exception as error:  # another engineer's module: any failure means "use synthetic"
        return synthetic_samples(n, seed), f"synthetic 3x[224..288]^2 ({type(error).__name__} importing ShapesDataset)"


def torchvision_pipeline(size: int = 300, antialias: bool = True) -> v2.Compose:
    """The same steps in torchvision.transforms.v2 (``antialias=True`` is v2's Resize default)."""
    return v2.Compose(
        [
            v2.RandomPhotometricDistort(p=0.5),
            v2.RandomZoomOut(fill={tv_tensors.Image: list(IMAGENET_MEAN), "others": 0}, side_range=(1.0, 4.0), p=0.5),
            v2.RandomIoUCrop(trials=50),
            v2.RandomHorizontalFlip(p=0.5),
            v2.Resize((size, size), antialias=antialias),
            v2.SanitizeBoundingBoxes(),
            v2.Normalize(mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD)),
        ]
    )


def to_tv_tensors(samples: list[Sample]) -> list[tuple[tv_tensors.Image, dict]]:
    wrapped = []
    for image, target in samples:
        boxes = tv_tensors.BoundingBoxes(target["boxes"], format="XYXY", canvas_size=tuple(image.shape[-2:]))
        wrapped.append((tv_tensors.Image(image), {**target, "boxes": boxes}))
    return wrapped


def deterministic_agreement(samples: list[Sample], size: int = 300, n: int = 20) -> dict[str, float]:
    """The steps of both pipelines that draw no random numbers once their coin is fixed (a flip that always
    flips, the resize without antialias, the normalisation), run on the same samples: the largest absolute
    difference of the images and of the boxes. Throughput is only comparable if these agree."""
    ours = Compose([RandomHorizontalFlip(p=1.0), Resize(size), Normalize()])
    theirs = v2.Compose([v2.RandomHorizontalFlip(p=1.0), v2.Resize((size, size), antialias=False),
                         v2.Normalize(mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD))])
    image_diff = box_diff = 0.0
    for (image, target), (tv_image, tv_target) in zip(samples[:n], to_tv_tensors(samples[:n])):
        our_image, our_target = ours(image, target)
        their_image, their_target = theirs(tv_image, tv_target)
        image_diff = max(image_diff, float((our_image - their_image.as_subclass(torch.Tensor)).abs().max()))
        boxes = our_target["boxes"] - their_target["boxes"].as_subclass(torch.Tensor)
        box_diff = max(box_diff, float(boxes.abs().max()) if boxes.numel() else 0.0)
    return {"images_compared": min(n, len(samples)), "max_abs_image_diff": image_diff, "max_abs_box_diff": box_diff}


def _images_per_second(pipeline: Callable, samples: list, seed: int) -> float:
    torch.manual_seed(seed)
    start = time.perf_counter()
    for image, target in samples:
        pipeline(image, target)
    return len(samples) / (time.perf_counter() - start)


def run(n: int = 200, repeats: int = 5, size: int = 300, threads: Optional[int] = None, seed: int = 0) -> dict[str, Any]:
    """Median images/s of ours and of torchvision v2 (antialias on and off) over ``repeats`` passes."""
    if threads is not None:
        torch.set_num_threads(threads)
    samples, source = load_samples(n, seed)
    wrapped = to_tv_tensors(samples)
    ours = SSDAugmentation(size)
    pipelines = {
        "ssd_lib": (ours, samples),
        "torchvision_v2": (torchvision_pipeline(size, antialias=True), wrapped),
        "torchvision_v2_no_antialias": (torchvision_pipeline(size, antialias=False), wrapped),
    }
    for name, (pipeline, inputs) in pipelines.items():  # warm-up, and a sanity check of the outputs
        for image, target in inputs[: min(20, n)]:
            out_image, out_target = pipeline(image, target)
            assert out_image.shape == (3, size, size), (name, out_image.shape)
    rates: dict[str, list[float]] = {name: [] for name in pipelines}
    for repeat in range(repeats):
        for name, (pipeline, inputs) in pipelines.items():
            rates[name].append(_images_per_second(pipeline, inputs, seed=seed + repeat))
    medians = {name: statistics.median(values) for name, values in rates.items()}
    return {
        "n": n,
        "repeats": repeats,
        "size": size,
        "source": source,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "images_per_s": medians,
        "all_images_per_s": rates,
        "ratio_vs_torchvision": medians["ssd_lib"] / medians["torchvision_v2"],
        "ratio_vs_torchvision_no_antialias": medians["ssd_lib"] / medians["torchvision_v2_no_antialias"],
        "deterministic_agreement": deterministic_agreement(samples, size),
    }


def format_table(result: dict[str, Any]) -> str:
    lines = [
        f"SSD augmentation -> {result['size']}x{result['size']}, {result['n']} images x {result['repeats']} repeats, "
        f"{result['threads']} torch thread(s), torch {result['torch']}, torchvision {result['torchvision']}",
        f"inputs: {result['source']}",
        f"{'pipeline':<30} {'median img/s':>12} {'min':>8} {'max':>8}",
    ]
    for name, median in result["images_per_s"].items():
        values = result["all_images_per_s"][name]
        lines.append(f"{name:<30} {median:>12.1f} {min(values):>8.1f} {max(values):>8.1f}")
    lines.append(f"ssd_lib / torchvision_v2 (antialias, v2 default): {result['ratio_vs_torchvision']:.2f}x")
    ratio = result["ratio_vs_torchvision_no_antialias"]
    lines.append(f"ssd_lib / torchvision_v2 (antialias=False, same as ours): {ratio:.2f}x")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="images per pass")
    parser.add_argument("--repeats", type=int, default=5, help="timed passes; the median is reported")
    parser.add_argument("--size", type=int, default=300, help="output side")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: leave as is)")
    args = parser.parse_args()
    print(format_table(run(args.n, args.repeats, args.size, args.threads)))


if __name__ == "__main__":
    main()
