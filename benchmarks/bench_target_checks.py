"""What checking a batch once saves: the previous trainer's per-step checks (labels per target, then
match_batch's per-image checks, then MultiBoxLoss's label check) against ssd_lib.train.batch_targets
(one check on the CPU batch) + MultiBoxLoss(check_labels=False), timed interleaved in one run.

    .venv/bin/python benchmarks/bench_target_checks.py
"""
import time, statistics, torch
from ssd_lib.model import ModelConfig, build_model
from ssd_lib.data import ShapesDataset, collate
from ssd_lib.loss import MultiBoxLoss
from ssd_lib.matching import match_batch
from ssd_lib.train import normalized_targets, batch_targets
torch.set_num_threads(2); torch.manual_seed(0)
model = build_model(ModelConfig.small(7, stride4_source=True))
ds = ShapesDataset("train", image_size=128)
images, targets = collate([ds[i] for i in range(32)])
with torch.no_grad():
    loc, logits = model(images)
def old_check(targets, num_classes):  # the per-step check of the previous trainer (train._check_labels)
    for t in targets:
        lab = t["labels"]
        if lab.numel() and (int(lab.min()) < 1 or int(lab.max()) >= num_classes):
            raise ValueError
old_loss, new_loss = MultiBoxLoss(), MultiBoxLoss(check_labels=False)
def old():
    old_check(targets, 7)
    b, l = normalized_targets(targets, images.shape[-2:], torch.device("cpu"))
    with torch.no_grad():
        lt, lab = match_batch(b, l, model.priors)          # validates every image
    return old_loss(loc, logits, lt, lab)
def new():
    lt, lab = batch_targets(targets, images.shape[-2:], model.priors, 7)   # one check, then validate=False
    return new_loss(loc, logits, lt, lab)
assert torch.equal(old().total, new().total)
t = {"old": [], "new": []}
for _ in range(300):
    for name, fn in (("old", old), ("new", new)):
        s = time.perf_counter(); fn(); t[name].append(time.perf_counter() - s)
m = {k: statistics.median(v) * 1e3 for k, v in t.items()}
model.train(); opt = torch.optim.AdamW(model.parameters(), 1e-3)
steps = []
for _ in range(10):
    s = time.perf_counter(); p = new(); lo, lg = model(images); p = new_loss(lo, lg, *batch_targets(targets, images.shape[-2:], model.priors, 7)); opt.zero_grad(); p.total.backward(); opt.step(); steps.append(time.perf_counter() - s)
step = statistics.median(steps) * 1e3
print(f"targets+matching+loss, median of 300: old {m['old']:.2f} ms, new {m['new']:.2f} ms, saved {m['old']-m['new']:.2f} ms "
      f"({(m['old']-m['new'])/m['old']*100:.0f}% of that part); a full fp32 training step here: {step:.0f} ms "
      f"(saving = {(m['old']-m['new'])/step*100:.1f}% of a step)")
