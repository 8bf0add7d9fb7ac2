"""benchmarks/gpu_suite.py: its dry run on the CPU (the whole suite on tiny sizes), its watchdog, its one-line errors.

The dry run is what keeps the GPU command from rotting between GPU runs: every step's real code runs, checks
included; only the sizes are tiny (module docstring of benchmarks/gpu_suite.py).
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from benchmarks import gpu_suite

REPO = Path(__file__).resolve().parents[1]


def _cuda_section() -> str:
    """The part of RESULTS.md the suite may write (the rest belongs to the CPU benchmark and to people)."""
    text = gpu_suite.RESULTS_MD.read_text()
    return text.split("<!-- results:cuda:begin -->", 1)[1].split("<!-- results:cuda:end -->", 1)[0]


def _suite(*args: str, prefix: str = "") -> subprocess.CompletedProcess:
    code = prefix + "import sys; from benchmarks.gpu_suite import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_dry_run_runs_every_step_on_the_cpu_and_leaves_results_md_alone(tmp_path):
    before = _cuda_section()
    out = tmp_path / "out"
    start = time.perf_counter()
    proc = _suite(str(out), "--dry-run", "--device", "cpu")
    seconds = time.perf_counter() - start
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(gpu_suite.OUTPUT_FILES)  # the device tool brings back 8
    summary = json.loads((out / "summary.json").read_text())
    steps = {s["number"]: s for s in summary["steps"]}
    assert sorted(steps) == [1, 2, 3, 4, 5] and summary["exit_status"] == 0
    for step in steps.values():
        assert step["status"] == "ok" or step["status"].startswith("skipped: "), step["status"]
        assert step["rows"], f"step {step['number']} recorded no row"
    tests = steps[1]["tests"]
    assert tests["failed"] == [] and tests["error"] == []
    if not torch.cuda.is_available():
        assert steps[1]["status"].startswith("skipped: ") and tests["passed"] == [] and len(tests["skipped"]) >= 6
    # Cases 3 and 4 ran their equality checks (ours against torchvision's SSD class) before timing.
    for number in (2, 3):
        assert all(row["check"].startswith("ok: ") for row in steps[number]["rows"]), steps[number]["rows"]
    assert steps[4]["met"] is True  # the dry run's target is 0
    # A CPU misses the GPU goals: the profiles of the misses are there, by kernel family.
    assert steps[2]["met"] is False and len(steps[2]["profiles"]) == 2
    assert steps[3]["profiles"] and steps[3]["loader"]
    markdown = (out / "summary.md").read_text()
    assert "results:cuda" in markdown and "| kernel family |" in markdown and "SMOKE RUN" in markdown
    assert _cuda_section() == before, "the dry run wrote RESULTS.md"
    print(f"dry run: {seconds:.1f} s")

    # --record-from writes the same section with report.update_results_md, between the cuda markers.
    results = tmp_path / "RESULTS.md"
    results.write_text("# x\n\n<!-- results:cuda:begin -->\nold\n<!-- results:cuda:end -->\n")
    gpu_run = {**summary, "meta": {**summary["meta"], "dry_run": False, "device": "cuda"}}
    (tmp_path / "gpu_summary.json").write_text(json.dumps(gpu_run))
    original, gpu_suite.RESULTS_MD = gpu_suite.RESULTS_MD, results
    try:
        assert gpu_suite.main(["--record-from", str(tmp_path / "gpu_summary.json")]) == 0
    finally:
        gpu_suite.RESULTS_MD = original
    written = results.read_text()
    assert "old" not in written and "(case 3) forward + post-processing" in written and "| step | status |" in written


@pytest.mark.parametrize("wheels, prefix, expected", [
    (True, "", "no .whl files there"),  # --wheels pointed at an empty folder
    (False, "sys.modules['tqdm'] = None; ", "missing tqdm (for ssd_lib's progress bars)"),  # a module not installed
])
def test_a_missing_requirement_is_one_line_without_traceback(tmp_path, wheels, prefix, expected):
    (tmp_path / "wheels").mkdir()
    extra = ["--wheels", str(tmp_path / "wheels")] if wheels else []
    proc = _suite(str(tmp_path / "out"), "--dry-run", "--device", "cpu", *extra, prefix="import sys; " + prefix)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.startswith("gpu_suite: "), proc.stderr
    assert expected in proc.stderr and proc.stdout == ""
    assert not (tmp_path / "out").exists()


def test_cpu_without_dry_run_and_a_dry_summary_for_results_md_are_refused(tmp_path, capsys):
    assert gpu_suite.main([str(tmp_path / "out"), "--device", "cpu"]) == 2
    (tmp_path / "summary.json").write_text(json.dumps({"meta": {"dry_run": True, "device": "cpu"}, "result": {}}))
    assert gpu_suite.main(["--record-from", str(tmp_path / "summary.json")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == ["gpu_suite: --device cpu runs only with --dry-run (the full sizes need a GPU): add --dry-run",
                   f"gpu_suite: {tmp_path / 'summary.json'}: a dry run's figures do not go into RESULTS.md"]


FAKE_WORKER = """
import json, os, sys, time
work, names = sys.argv[1], sys.argv[2].split(",")
def write(path, obj):
    with open(path + ".tmp", "w") as f:
        json.dump(obj, f)
    os.replace(path + ".tmp", path)
for name in names:
    write(os.path.join(work, "current.json"), {"step": name, "pid": os.getpid(), "started": time.time()})
    if name == "hang":
        time.sleep(60)
    if name == "crash":
        os._exit(3)
    write(os.path.join(work, f"step_{name}.json"), {"status": "ok", "seconds": 0})
"""


def test_the_watchdog_kills_a_hung_step_records_a_crash_and_runs_the_rest(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(FAKE_WORKER)
    launches = []

    def launch(pending):
        launches.append(list(pending))
        return subprocess.Popen([sys.executable, str(script), str(tmp_path), ",".join(pending)], start_new_session=True)

    lines = []
    start = time.perf_counter()
    gpu_suite.supervise(["a", "hang", "b", "crash", "c"], tmp_path, {"a": 30, "hang": 0.5, "b": 30, "crash": 30, "c": 30},
                        launch, say=lines.append)
    assert time.perf_counter() - start < 20
    status = {name: json.loads((tmp_path / f"step_{name}.json").read_text())["status"]
              for name in ("a", "hang", "b", "crash", "c")}
    assert status["a"] == status["b"] == status["c"] == "ok"
    assert status["hang"].startswith("timeout: killed after its limit of")
    assert status["crash"].startswith("crashed: the worker exited with status 3")
    assert launches == [["a", "hang", "b", "crash", "c"], ["b", "crash", "c"], ["c"]]
    assert any(line.startswith("[step hang] timeout") for line in lines)


@pytest.mark.parametrize("name, family", [
    ("sm90_xmma_fprop_implicit_gemm_bf16bf16_bf16f32_f32_nhwckrsc_nhwc_tilesize128x128x64", "convolution"),
    ("cudnn::bn_fw_tr_1C11_kernel_NCHW<float, float, int, 512, true, 1, true>", "batch norm"),
    ("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64_warpgroupsize1x1x1_execute_kernel__5x_cublas", "matmul"),
    ("void vision::ops::(anonymous namespace)::nms_kernel_impl<float>(int, double, float const*, unsigned long*)",
     "NMS"),
    ("void at::native::sbtopk::gatherTopK<float, unsigned int, 2, false>(...)", "sort / top-k"),
    ("void at::native::reduce_kernel<512, 1, at::native::ReduceOp<float, at::native::func_wrapper_t<float>>>", "reduction"),
    ("Memcpy HtoD (Pinned -> Device)", "copy / indexing"),
    ("aten::mkldnn_convolution", "convolution"),
    ("aten::addmm", "matmul"),
    ("something_new", "other"),
])
def test_kernel_families_from_names(name, family):
    assert gpu_suite.kernel_family(name) == family


def test_every_step_has_a_limit_within_the_eight_minutes():
    gpu = sum(step.limit_s for step in gpu_suite.STEPS) + gpu_suite.REPORT_LIMIT_S[0]
    assert gpu <= 8 * 60, gpu
    assert [step.number for step in gpu_suite.STEPS] == [1, 2, 3, 4, 5]
