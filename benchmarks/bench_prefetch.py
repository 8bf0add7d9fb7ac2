"""Issue 17, lever 3: does rendering the next batch in a thread, during the step, make training faster on two cores?

The same training step (the main job's model, bf16 autocast, channels_last, 32 images of 128 px) with the batch
rendered inline and with a prefetch thread (a queue of two batches), back to back, two rounds of 40 timed steps.
On 2026-12-04 (two idle cores) the thread measured 0.83x and 0.76x of the inline speed: the two compute threads
already fill both cores, so the main job keeps its data in the main process.

Usage::

    python benchmarks/bench_prefetch.py
"""
import time, torch, threading, queue
from ssd_lib.data import SHAPE_NAMES, ShapesDataset, collate
from ssd_lib.model import build_model, ModelConfig
from ssd_lib.train import batch_targets
from ssd_lib.loss import MultiBoxLoss
torch.set_num_threads(2)
C = len(SHAPE_NAMES)+1
ds = ShapesDataset("train", size=32*200, image_size=128, seed=0)
def batches(start, n):
    for s in range(start, start+n):
        yield collate([ds[s*32+i] for i in range(32)])
def threaded(start, n):
    q = queue.Queue(maxsize=2)
    def work():
        for b in batches(start, n): q.put(b)
        q.put(None)
    threading.Thread(target=work, daemon=True).start()
    while (b := q.get()) is not None: yield b
def run(gen, n, start):
    torch.manual_seed(0)
    model = build_model(ModelConfig.small(C, image_size=128, stride4_source=True)).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3); crit = MultiBoxLoss()
    t0 = None
    for k, (images, targets) in enumerate(gen(start, n)):
        if k == 5: t0 = time.perf_counter()
        loc_t, lab = batch_targets(targets, images.shape[-2:], model.priors, model.num_classes)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loc, logits = model(images.contiguous(memory_format=torch.channels_last))
        l = crit(loc.float(), logits.float(), loc_t, lab).total
        opt.zero_grad(); l.backward(); opt.step()
    return (time.perf_counter()-t0)/(n-5)*1000
for rep in range(2):
    a = run(batches, 45, rep*50); b = run(threaded, 45, rep*50)
    print(f"inline {a:.1f} ms/step  threaded {b:.1f} ms/step  ratio {a/b:.2f}", flush=True)
