"""Lesson 13, "Your SSD": the learner's own pieces train and evaluate the detector through the library's seam.

The notebook collects the learner's default boxes, ``targets`` (their per-image match and encode, for a batch),
``multibox_loss`` and ``postprocess`` (their decode and NMS). Here are the helpers it calls:

* :func:`use_your_default_boxes` puts the learner's default boxes into the model (refused, with the first row that
  differs, unless they are the model's own: the heads predict for one fixed order of boxes);
* :func:`train_your_ssd` runs :func:`ssd_lib.train.train` with ``targets=`` and ``loss=`` the learner's, each call
  of a piece under the exercise's tripwire (:mod:`ssd_lib.course.checks.tripwire`): a piece that hands its work to
  the library stops the run with the tripwire's message. Only the learner's calls are traced, not the network;
* :func:`test_map` scores the trained model with the learner's ``postprocess`` (also traced) on the test split;
* :data:`BUDGETS` / :func:`budget_for`: how long each mode trains (fast: mechanics only; graded: what nbgrader's
  autograde and the course grader run; full: a longer run at the learner's desk);
* ``python -m ssd_lib.course.capstone measure`` trains the teacher's pieces (read from the teacher notebook), a
  planted wrong piece, and the teacher's pieces on the shipped stride-4 layout, at the graded budget, times a step with the library's and the
  learner's pieces, and writes ``assets/capstone.json``, whose numbers the lesson prints (:func:`describe_measurements`).

Usage::

    from ssd_lib.course import capstone
    budget = capstone.budget_for(fast=False, grading=True)
    model = capstone.build_model()
    capstone.use_your_default_boxes(model, default_boxes)
    run = capstone.train_your_ssd(model, targets, multibox_loss, budget)
    print(capstone.test_map(run.model, postprocess, budget))
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn

from ssd_lib.data import SHAPE_NAMES, ShapesDataset
from ssd_lib.detect import NMS_THRESHOLD, PRE_NMS_TOP_K, SCORE_THRESHOLD, TOP_K, detect
from ssd_lib.evaluate import evaluate_predictor, predict
from ssd_lib.files import write_json
from ssd_lib.machine import describe, load_average, machine_info
from ssd_lib.model import SSD, ModelConfig, build_model as build_ssd
from ssd_lib.train import TrainConfig, train

from .assets import NOTEBOOK_DIR, REPO_ROOT, short_path
from .checks.tripwire import FORBIDDEN, Delegated, watching

__all__ = ["Budget", "BUDGETS", "budget_for", "build_model", "use_your_default_boxes", "DelegatedPiece", "watched",
           "train_your_ssd", "YourRun", "Detector", "test_map", "teacher_pieces", "measure", "load_measurements",
           "describe_measurements", "MEASUREMENTS", "TEACHER_NOTEBOOK", "main"]

IMAGE_SIZE = 128
NUM_CLASSES = len(SHAPE_NAMES) + 1  # background counted
MEASUREMENTS = REPO_ROOT / "assets" / "capstone.json"
TEACHER_NOTEBOOK = NOTEBOOK_DIR / "13_your_ssd.ipynb"
PIECE_TAG = "capstone-piece"  # cell tag of the teacher notebook's code that `measure` runs besides the solutions


@dataclass(frozen=True)
class Budget:
    """How long one mode trains and what it evaluates on. ``graded``: the check cell asserts the mAP."""

    mode: str
    steps: int
    batch_size: int
    test_images: int
    graded: bool
    why: str

    def describe(self) -> str:
        return (f"{self.mode} budget: {self.steps} steps of {self.batch_size} images, test mAP on {self.test_images} "
                f"test images ({self.why})")


# The graded budget: measured with `python -m ssd_lib.course.capstone measure` (assets/capstone.json): the teacher's
# pieces reach the grade with a margin in about three minutes of training on two CPU cores.
GRADED_STEPS = 1200
BUDGETS: dict[str, Budget] = {
    "fast": Budget("fast", 4, 8, 16, False, "fast mode: the mechanics only, no mAP to speak of"),
    "graded": Budget("graded", GRADED_STEPS, 32, 500, True, "the graded run: nbgrader's autograde and the grader"),
    "full": Budget("full", 1500, 32, 500, True, "full mode: a longer run"),
}


def budget_for(fast: bool, grading: bool) -> Budget:
    """Grading (nbgrader's autograde sets both modes) trains the graded run; fast mode alone the mechanics; else full."""
    return BUDGETS["graded" if grading else "fast" if fast else "full"]


def build_model(kind: str = "five_map", seed: int = 0) -> SSD:
    """The course's small SSD for 128 px Shapes, its class logits starting at background probability 0.99
    (:meth:`ssd_lib.model.SSD.init_background_prior`). ``kind``: "five_map" (the lessons' five maps, 1534 default
    boxes: the capstone's model) or "stride4" (the shipped layout, six maps, 3582)."""
    if kind not in ("stride4", "five_map"):
        raise ValueError(f"kind must be 'stride4' or 'five_map'; got {kind!r}")
    torch.manual_seed(seed)
    config = ModelConfig.small(NUM_CLASSES, image_size=IMAGE_SIZE, stride4_source=kind == "stride4")
    return build_ssd(config).init_background_prior(0.99)


# ---------------------------------------------------------------- the tripwire around the learner's calls

class DelegatedPiece(RuntimeError):
    """A piece of the learner's SSD called the library function its exercise asks them to write."""


def watched(fn: Callable, checker: str, piece: str) -> Callable:
    """``fn`` with each call under the tripwire of ``checker``'s exercise: a forbidden call raises
    :class:`DelegatedPiece` naming ``piece`` and the call number (a training step for targets and loss)."""
    if not callable(fn):
        raise TypeError(f"{piece} must be your function, got {type(fn).__name__}")
    forbid, calls = FORBIDDEN[checker], {"n": 0}

    def call(*args):
        calls["n"] += 1
        error = None
        with watching(forbid) as watch:
            try:
                out = fn(*args)
            except Delegated as raised:  # the trip itself; the message is the watch's
                error = raised
        if watch.failure() is not None:
            raise DelegatedPiece(f"your {piece} (call {calls['n']}): {watch.failure()}") from None
        if error is not None:
            raise error
        return out

    call.__wrapped_piece__ = fn
    return call


def use_your_default_boxes(model: SSD, default_boxes: Callable) -> Tensor:
    """Your ``default_boxes(model.prior_config)`` become ``model.priors``, checked first against the boxes the model's
    heads predict for: same count and same order (map, row, column, box), to 1e-5. Returns the new priors."""
    priors = watched(default_boxes, "check_default_boxes", "default_boxes")(model.prior_config)
    own = model.priors
    if not isinstance(priors, Tensor) or priors.ndim != 2 or tuple(priors.shape) != tuple(own.shape):
        shape = tuple(priors.shape) if isinstance(priors, Tensor) else type(priors).__name__
        raise ValueError(f"your default_boxes gave {shape} for this model, whose heads predict for {tuple(own.shape)} "
                         f"default boxes: sum over its maps {list(model.prior_config.feature_maps)} of f_k^2 times "
                         f"{list(model.prior_config.boxes_per_location)} boxes per cell, as (P, 4) cx, cy, w, h")
    close = torch.isclose(priors.detach().double().cpu(), own.double().cpu(), atol=1e-5, rtol=0).all(dim=1)
    if not bool(close.all()):
        row = int((~close).nonzero()[0])
        raise ValueError(f"your default box {row} is {[round(v, 4) for v in priors[row].tolist()]} but the model's head "
                         f"predicts there for {[round(v, 4) for v in own[row].tolist()]} (cx, cy, w, h): the order is map, "
                         "row i, column j, then the cell's boxes (s_k, s'_k, then r and 1/r per ratio), as in lesson 2")
    model.priors = priors.detach().to(own.device, own.dtype).clone()
    return model.priors


# ---------------------------------------------------------------- training and evaluation

@dataclass
class YourRun:
    """What :func:`train_your_ssd` returns: the trained model and the run's figures."""

    model: SSD
    budget: Budget
    steps: int
    seconds: float
    losses: list[float] = field(default_factory=list)  # the loss at each logged step

    @property
    def ms_per_step(self) -> float:
        return 1000 * self.seconds / max(self.steps, 1)


def train_your_ssd(model: SSD, targets: Callable | None, loss: Callable | None, budget: Budget,
                   progress: bool = False, tripwire: bool = True, seed: int = 0) -> YourRun:
    """Train ``model`` on freshly generated Shapes images (``budget.steps`` steps of ``budget.batch_size``) with
    ``TrainConfig.small_cpu``, your ``targets`` and ``loss`` (None: the library's). Each call of a piece runs
    under its exercise's tripwire (``tripwire=False`` only to time the pieces without it). Your loss gets the
    network's outputs in float32, as the library's loss computes them."""
    if targets is not None and tripwire:
        targets = watched(targets, "check_batch_targets", "targets")
    if loss is not None:
        piece = watched(loss, "check_multibox_loss", "multibox_loss") if tripwire else loss

        def float_loss(loc, logits, loc_targets, labels, piece=piece):
            return piece(loc.float(), logits.float(), loc_targets, labels)
        loss = float_loss
    config = TrainConfig.small_cpu(seed=seed, batch_size=budget.batch_size, log_every=max(1, budget.steps // 50),
                                   warmup_steps=min(100, max(1, budget.steps // 5)))
    data = ShapesDataset("train", size=budget.steps * budget.batch_size, image_size=model.prior_config.image_size,
                         seed=seed)
    start = time.perf_counter()
    result = train(model, data, config=config, targets=targets, loss=loss, progress=progress)
    seconds = time.perf_counter() - start
    return YourRun(result.model, budget, result.steps[-1]["step"] if result.steps else 0, seconds,
                   [float(s["loss"]) for s in result.steps])


class Detector:
    """A trained model and a post-processing as one detector: ``detector(images)`` with images a list of
    ``(3, H, W)`` in [0, 1] gives one dict per image with ``boxes (D, 4)`` pixel xyxy of that image, ``scores``
    and ``labels`` (:func:`ssd_lib.evaluate.predict` with ``postprocess``, in batches of ``batch_size``)."""

    def __init__(self, model: nn.Module, postprocess: Callable = detect, batch_size: int = 64) -> None:
        self.model, self.postprocess, self.batch_size = model, postprocess, batch_size

    def __call__(self, images: list[Tensor]) -> list[dict]:
        device = getattr(self.model, "priors").device
        images = [image.detach().to(device, torch.float32) for image in images]
        out = []
        for start in range(0, len(images), self.batch_size):
            out += predict(self.model, images[start:start + self.batch_size], SCORE_THRESHOLD, NMS_THRESHOLD, TOP_K,
                           pre_nms_top_k=PRE_NMS_TOP_K, postprocess=self.postprocess)
        return out


def test_map(model: SSD, postprocess: Callable | None, budget: Budget, tripwire: bool = True) -> dict:
    """VOC mAP@0.5 (11-point) of ``model`` with your ``postprocess`` (None: the library's ``detect``) on the first
    ``budget.test_images`` images of the built-in test split; also the per-class APs and the seconds it took."""
    if postprocess is None:
        postprocess = detect
    elif tripwire:
        postprocess = watched(postprocess, "check_postprocess", "postprocess")
    dataset = ShapesDataset("test", size=budget.test_images, image_size=model.prior_config.image_size)
    start = time.perf_counter()
    result = evaluate_predictor(Detector(model, postprocess), dataset, batch_size=64)
    return {"mAP": float(result["mAP"]), "ap": [float(a) for a in result["ap"]], "classes": dataset.classes,
            "images": len(dataset), "seconds": time.perf_counter() - start}


test_map.__test__ = False  # not a pytest test, despite its name


# ---------------------------------------------------------------- the measurements the lesson quotes

def teacher_pieces(notebook: str | Path = TEACHER_NOTEBOOK) -> dict[str, Any]:
    """The teacher's pieces, run from the teacher notebook itself: its cells tagged ``capstone-piece`` (imports,
    the planted wrong piece) and its solution cells, in order, markers dropped, in one namespace."""
    import nbformat

    from .student import SOLUTION_BEGIN, SOLUTION_END

    nb = nbformat.read(str(notebook), as_version=4)
    namespace: dict[str, Any] = {"__name__": "capstone_teacher_pieces"}
    for cell in nb.cells:
        solution = (cell.metadata.get("nbgrader") or {}).get("solution")
        if cell.cell_type != "code" or not (solution or PIECE_TAG in cell.metadata.get("tags", [])):
            continue
        lines = [ln for ln in cell.source.split("\n")
                 if ln.strip() not in (SOLUTION_BEGIN, SOLUTION_END) and not ln.lstrip().startswith("%")]
        exec(compile("\n".join(lines), f"{Path(notebook).name}:cell", "exec"), namespace)
    missing = [n for n in ("default_boxes", "targets", "multibox_loss", "postprocess", "targets_without_variances")
               if not callable(namespace.get(n))]
    if missing:
        raise ValueError(f"{short_path(Path(notebook))} does not define {missing} in its solution and "
                         f"{PIECE_TAG!r} cells")
    return namespace


RUNS = {
    "right": ("five_map", "targets", "the teacher's pieces, the lessons' five-map model"),
    "wrong": ("five_map", "targets_without_variances", "the same, but encode without the variances (1, 1 instead of "
              "0.1, 0.2) while decode keeps them"),
    "stride4": ("stride4", "targets", "the teacher's pieces, the shipped stride-4 layout"),
}


def _measured_run(name: str, pieces: dict, budget: Budget) -> dict:
    kind, targets, what = RUNS[name]
    model = build_model(kind)
    use_your_default_boxes(model, pieces["default_boxes"])
    run = train_your_ssd(model, pieces[targets], pieces["multibox_loss"], budget)
    yours, library = test_map(run.model, pieces["postprocess"], budget), test_map(run.model, None, budget)
    record = {"what": what, "model": kind, "default_boxes": int(model.priors.shape[0]), "steps": run.steps,
              "batch_size": budget.batch_size, "train_seconds": round(run.seconds, 1),
              "ms_per_step": round(run.ms_per_step, 1), "test_images": yours["images"],
              "test_mAP": round(yours["mAP"], 4), "test_mAP_library_detect": round(library["mAP"], 4),
              "ap": [round(a, 4) for a in yours["ap"]], "eval_seconds": round(yours["seconds"], 1),
              "eval_seconds_library_detect": round(library["seconds"], 1), "final_loss": round(run.losses[-1], 4)}
    print(json.dumps({name: record}), flush=True)
    return record


def _step_times(pieces: dict, steps: int, rounds: int = 2) -> dict:
    """Milliseconds per training step (fresh five-map model, batch 32) with the library's pieces, the teacher's
    learner-style pieces, and those under the tripwire (what the graded run does), interleaved ``rounds`` times."""
    budget = Budget("timing", steps, 32, 0, False, "timing")
    kinds = {"library": (None, None, False), "learner": (pieces["targets"], pieces["multibox_loss"], False),
             "learner_tripwire": (pieces["targets"], pieces["multibox_loss"], True)}
    times: dict[str, list[float]] = {k: [] for k in kinds}
    for _ in range(rounds):
        for kind, (targets, loss, tripwire) in kinds.items():
            times[kind].append(train_your_ssd(build_model(), targets, loss, budget, tripwire=tripwire).ms_per_step)
    return {"steps": steps, "rounds": rounds, **{k: round(min(v), 1) for k, v in times.items()},
            "all_ms": {k: [round(t, 1) for t in v] for k, v in times.items()}}


def measure(out: Path = MEASUREMENTS, steps: int = GRADED_STEPS, timing_steps: int = 30,
            runs: tuple[str, ...] = tuple(RUNS), notebook: Path = TEACHER_NOTEBOOK, command: str | None = None,
            test_images: int = BUDGETS["graded"].test_images) -> dict:
    """Time a step, then train each of ``runs`` at the graded budget (``steps`` steps, test mAP on ``test_images``);
    ``out`` is rewritten atomically after each part, so an interrupted run keeps what it finished."""
    pieces = teacher_pieces(notebook)
    budget = Budget("graded", steps, BUDGETS["graded"].batch_size, test_images, True, "measured")
    data: dict[str, Any] = {"format": "ssd_lib.capstone/1", "command": command or _command(steps, timing_steps, runs),
                            "machine": machine_info(torch.device("cpu")), "budget": asdict(budget),
                            "train_config": "TrainConfig.small_cpu(seed=0, batch_size=32), warm-up min(100, steps // 5); "
                                            "fresh Shapes images (seed 0); model: build_model(kind), background prior 0.99",
                            "step_time_ms": None, "runs": {}}
    if timing_steps:
        data["step_time_ms"] = _step_times(pieces, timing_steps)
        print(json.dumps({"step_time_ms": data["step_time_ms"]}), flush=True)
        write_json(out, data)
    for name in runs:
        data["runs"][name] = _measured_run(name, pieces, budget)
        data["machine"]["load_average_end"] = load_average()
        write_json(out, data)
    return data


def _command(steps: int, timing_steps: int, runs: tuple[str, ...]) -> str:
    return (f"python -m ssd_lib.course.capstone measure --steps {steps} --timing-steps {timing_steps} "
            f"--runs {' '.join(shlex.quote(r) for r in runs)}")


def load_measurements(path: str | Path = MEASUREMENTS) -> dict:
    """``assets/capstone.json`` as written by :func:`measure`."""
    data = json.loads(Path(path).read_text())
    if data.get("format") != "ssd_lib.capstone/1":
        raise ValueError(f"{path} is not a capstone measurement (format {data.get('format')!r})")
    return data


def describe_measurements(data: dict | None = None) -> str:
    """The lines the lesson prints from ``assets/capstone.json``: the command, the machine, each run's steps,
    seconds and test mAP, what the wrong piece costs, and the time of a step with each kind of pieces."""
    data = load_measurements() if data is None else data
    lines = [f"measured with `{data['command']}`", f"  on {describe(data['machine'])}"]
    for name, run in data["runs"].items():
        lines.append(f"  {name:>8}: {run['what']}: {run['steps']} steps of {run['batch_size']} images in "
                     f"{run['train_seconds']:.0f} s of training ({run['ms_per_step']:.0f} ms per step); test mAP@0.5 "
                     f"{run['test_mAP']:.4f} with the teacher's postprocess, {run['test_mAP_library_detect']:.4f} with "
                     f"the library's detect ({run['test_images']} test images)")
    runs = data["runs"]
    if "right" in runs and "wrong" in runs:
        lines.append(f"  the wrong piece costs {runs['right']['test_mAP'] - runs['wrong']['test_mAP']:.4f} mAP "
                     f"({runs['right']['test_mAP']:.4f} -> {runs['wrong']['test_mAP']:.4f})")
    timing = data.get("step_time_ms")
    if timing:
        lines.append(f"  one step of 32 images ({timing['steps']} steps, best of {timing['rounds']}): library pieces "
                     f"{timing['library']:.0f} ms, learner-style pieces {timing['learner']:.0f} ms "
                     f"({timing['learner'] / timing['library'] - 1:+.0%}), under the tripwire "
                     f"{timing['learner_tripwire']:.0f} ms ({timing['learner_tripwire'] / timing['library'] - 1:+.0%})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ssd_lib.course.capstone", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("measure", help="train the teacher's pieces, a wrong piece and the stride-4 layout; write the asset")
    m.add_argument("--steps", type=int, default=GRADED_STEPS)
    m.add_argument("--timing-steps", type=int, default=30, help="steps per timing run (0: no timing)")
    m.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    m.add_argument("--test-images", type=int, default=BUDGETS["graded"].test_images)
    m.add_argument("--out", type=Path, default=MEASUREMENTS)
    m.add_argument("--notebook", type=Path, default=TEACHER_NOTEBOOK)
    args = parser.parse_args(argv)
    command = _command(args.steps, args.timing_steps, tuple(args.runs))
    if args.test_images != BUDGETS["graded"].test_images:
        command += f" --test-images {args.test_images}"
    if args.out != MEASUREMENTS:
        command += f" --out {shlex.quote(str(args.out))}"
    data = measure(args.out, args.steps, args.timing_steps, tuple(args.runs), args.notebook, command, args.test_images)
    print(describe_measurements(data))
    print(f"wrote {short_path(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
