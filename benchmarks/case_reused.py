"""Cases 5 and 6: the existing scripts ``bench_augment`` and ``bench_metrics``, as rows of the table.

5: augmentation images/s, ``ssd_lib.augment.SSDAugmentation`` against the same steps in
torchvision.transforms.v2 with the same resize (bilinear, antialias off, as ours and the released code's
cv2.resize); v2's default, antialias on, is a costlier resize, and its figure is in the notes. The check:
the deterministic steps (flip, resize, normalise) give the same images and boxes on both sides.
Runs on the CPU whatever ``--device`` says: augmentation happens in DataLoader workers.
6: VOC evaluation of 5,000 images x 100 detections (--quick: 500 images): ``evaluate_voc`` seconds
(VOC2007 11-point; VOC2010 all-point and pycocotools' COCO AP in the notes). No torchvision
counterpart, so no speed-up.

Usage::

    rows = run_augment(Settings(torch.device("cpu"), quick=True))
"""
from __future__ import annotations

from . import bench_augment, bench_metrics
from .row import Row, Settings
from .timing import Timing

__all__ = ["run_augment", "run_metrics"]


def run_augment(settings: Settings) -> list[Row]:
    n, repeats = (20, 2) if settings.quick else (200, 5)
    result = bench_augment.run(n=n, repeats=repeats, size=300)
    rates = result["all_images_per_s"]
    ours = Timing.from_seconds([1 / r for r in rates["ssd_lib"]])
    theirs = Timing.from_seconds([1 / r for r in rates["torchvision_v2_no_antialias"]])
    agree = result["deterministic_agreement"]
    same = agree["max_abs_image_diff"] <= 1e-5 and agree["max_abs_box_diff"] <= 1e-4
    check = (f"{'ok' if same else 'MISMATCH'}: flip + resize + normalise agree on {agree['images_compared']} images "
             f"(max |diff| image {agree['max_abs_image_diff']:.1e}, boxes {agree['max_abs_box_diff']:.1e} px; "
             f"{result['source']})")
    row = Row(f"5 augmentation to 300x300 ({n} images x {repeats}, CPU; v2 antialias off, as ours)", ours, theirs,
              unit="ms/img", check=check)
    medians = result["images_per_s"]
    row.notes.append(f"ours {medians['ssd_lib']:.1f} img/s, torchvision v2 without antialias "
                     f"{medians['torchvision_v2_no_antialias']:.1f} img/s (the headline), with antialias (v2's "
                     f"default, a costlier resize) {medians['torchvision_v2']:.1f} img/s "
                     f"(ours / that: {result['ratio_vs_torchvision']:.2f}x)")
    row.extra = {k: v for k, v in result.items() if k != "all_images_per_s"}
    return [row]


def run_metrics(settings: Settings) -> list[Row]:
    num_images = 500 if settings.quick else 5000
    result = bench_metrics.run(num_images=num_images, dets_per_image=100, num_classes=20)
    row = Row(f"6 VOC evaluation ({num_images} images x 100 detections)", Timing.from_seconds([result["voc07_s"]]),
              None, unit="s", check=f"ok: mAP {result['voc07_mAP']:.4f} (one run, no repeats)")
    row.notes.append(f"VOC2007 11-point {result['voc07_s']:.2f} s, VOC2010 all-point {result['voc10_s']:.2f} s, "
                     f"COCO (pycocotools) {result['coco_s']:.2f} s")
    row.extra = result
    return [row]
