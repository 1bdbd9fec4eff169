"""The benchmark scripts run as the README says and write the records it documents (their
timings are not asserted: benchmarks are not timed tests)."""

import importlib.util
import json
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("scope", ["module", "kernels"])
def test_bench_norms_quick_writes_records_with_ratios(tmp_path, scope):
    out = tmp_path / "norms.json"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    # the kernels run also picks its own shape, dtype and thread count
    flags = (["--kernels-only", "--shapes", "256x96", "--dtypes", "bfloat16", "--threads", "2"]
             if scope == "kernels" else [])
    dtype, shape = ("bfloat16", [256, 96]) if scope == "kernels" else ("float32", [4096, 512])
    result = subprocess.run([sys.executable, str(REPO / "scripts/bench/bench_norms.py"), "--quick",
                             "--kinds", "l1", "rms", "--json", str(out), *flags],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    records = json.loads(out.read_text())
    assert [r["kind"] for r in records] == ["l1", "rms"]
    for r in records:
        assert {"kind", "device", "dtype", "shape", "ms", "layernorm_ms", "ratio"} <= set(r)
        assert (r["device"], r["dtype"], r["shape"], r["backend"]) == ("cpu", dtype, shape, "native")
        assert r["scope"] == scope and r["ms"] > 0 and len(r["round_ratios"]) == 5  # --quick: 5 rounds
        assert r["ratio"] == statistics.median(r["round_ratios"]) > 0
        assert r["kernel_ms"] is r["layernorm_kernel_ms"] is r["kernel_ratio"] is None  # CUDA events: GPUs only
    assert "ratio" in result.stdout and "worst ratio" in result.stdout
    assert ("threads 2," in result.stdout) == (scope == "kernels")  # OMP_NUM_THREADS=1 above


@pytest.fixture
def bench_norms():
    """scripts/bench/bench_norms.py as a module of this process (the package is imported already, so
    its argument checks run without a new interpreter)."""
    spec = importlib.util.spec_from_file_location("bench_norms", REPO / "scripts/bench/bench_norms.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_bench_norms_rejects_cuda_without_a_gpu(bench_norms):
    with pytest.raises(SystemExit, match="--device cuda but torch sees no CUDA device"):
        bench_norms.main(["--device", "cuda"])


def test_bench_norms_names_a_malformed_shape(bench_norms, capsys):
    with pytest.raises(SystemExit) as exit_:
        bench_norms.main(["--shapes", "64x"])
    assert exit_.value.code == 2
    assert "shape '64x' is not ROWSxFEATURES with positive integers, e.g. 4096x512" in capsys.readouterr().err


def test_bench_norms_overhead_times_a_tiny_input_in_microseconds(bench_norms, capsys, tmp_path):
    bench_norms.main(["--overhead", "--kinds", "l1", "rms", "--dtypes", "float32", "--json", str(tmp_path / "o.json")])
    records = json.loads((tmp_path / "o.json").read_text())
    assert [(r["kind"], r["shape"]) for r in records] == [("l1", [8, 512]), ("rms", [8, 512])]
    assert all(len(r["round_ratios"]) == 30 for r in records)
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith(("l1 ", "rms "))]
    assert len(lines) == 2 and all(re.search(r" us  LayerNorm +[\d.]+ us +[-+][\d.]+ us  ratio", line) for line in lines)
    assert re.search(r"floor: an identity torch.autograd.Function, fwd\+bwd at 8x512: [\d.]+ us", out)


def test_calibrate_constants_prints_the_measured_ratio_of_every_constant(capsys):
    import calibrate_constants  # scripts/bench/calibrate_constants.py
    calibrate_constants.main(["--rows", "2000", "--sizes", "64", "512"])
    rows = [line.split("|")[1:-1] for line in capsys.readouterr().out.splitlines()[2:]]
    assert [(kind.strip(), constant.strip()) for kind, constant, *_ in rows] == \
        [(f"{kind} (k={k})" if k else kind, str(constant)) for kind, constant, k in calibrate_constants.SETTINGS]
    ratios = {(kind.strip(), constant.strip()): [float(r) for r in values] for kind, constant, *values in rows}
    assert all(abs(r - 1) < 0.02 for r in ratios[("l1", "gaussian")] + ratios[("linf", "gaussian")])
    assert all(1.3 < r < 1.5 for r in ratios[("linf", "paper")])  # the supplement's C_Linf, as test_norms


def test_bench_precision_writes_the_three_settings_the_plot_and_the_records(tmp_path, capsys):
    """A few rows per measurement: a line per kind x (float32, and fp16/bf16 x three settings);
    float32 storage and bf16 hold over the whole grid; with float32 statistics (storage) no
    Gaussian row breaks in fp16; everything narrow breaks l2 before l1 before linf (the sums of
    squares, of |d| and of x overflow in turn); a float32 mean (wide-mean) keeps linf whole; the
    outlier rows of the storage setting break where fp16 itself overflows (50 s > 65504)."""
    import bench_precision  # scripts/bench/bench_precision.py
    out, plot, records = tmp_path / "precision.md", tmp_path / "precision.png", tmp_path / "precision.json"
    bench_precision.main(["--rows", "8", "--out", str(out), "--plot", str(plot), "--json", str(records)])
    document = out.read_text()
    lines = document[document.index("| kind | format | setting | gaussian"):].split("\n\n")[0].splitlines()
    rows = {tuple(cell.strip() for cell in line.split("|")[1:4]): [cell.strip() for cell in line.split("|")[4:-1]]
            for line in lines[2:]}
    assert len(rows) == 5 * 7 and capsys.readouterr().out.startswith(lines[0])
    assert "Made by `python scripts/bench/bench_precision.py --out docs/precision.md" in document
    assert "normalizes 8 rows" in document and "![median row error against the input scale](precision.png)" in document
    assert "- fp16, narrow: rows break (inf, NaN or all zero): l2 from s = " in document
    assert "- fp16, storage: no row of l2, l1, linf, topk, rms breaks on the grid" in document
    assert "- bf16, narrow: no row of l2, l1, linf, topk, rms breaks on the grid; " in document
    assert all(cells[0] == "1e-4 .. 1e4" and cells[1] == "none" for (_, fmt, _), cells in rows.items()
               if fmt in ("float32", "bf16"))

    def first_broken(kind, setting, family=0):
        return float(rows[kind, "fp16", setting][1 + 4 * family].split()[3])  # "from s = 1e1 (all there)"
    assert first_broken("l2", "narrow") < first_broken("l1", "narrow") < first_broken("linf", "narrow")
    assert rows["linf", "fp16", "wide-mean"][1] == "none"
    assert all(first_broken(kind, "storage", family=1) == 3e3 for kind in bench_precision.KINDS)
    small = document[document.index("| kind | format | setting | terms zero"):].split("\n\n")[0]
    l2_narrow = next(line for line in small.splitlines() if line.startswith("| l2 | fp16 | narrow |")).split("|")
    zero, tiny = (float(share.strip(" %")) for share in l2_narrow[4].split(","))
    assert zero > 80 and tiny == 100 and l2_narrow[6].strip() == "inf"  # at s = 1e-4 the squares underflow
    fp8 = document[document.index("| kind | fp8 input |"):].splitlines()[2:]
    assert len(fp8) == 5 * 2 * 4 and all(0.01 < float(line.split("|")[5]) < 0.1 for line in fp8)  # fp8's rounding
    assert plot.read_bytes()[:4] == b"\x89PNG"
    measured = json.loads(records.read_text())
    assert len(measured) == 5 * 7 * 3 * 2 * 17 + 5 * 6 * 17 and {"worst", "median", "broken"} <= set(measured[0])


def test_bench_norms_l2_is_the_packages_own_kernel_of_layer_norm(bench_norms, monkeypatch):
    """The l2 row of the benchmark is rows.py's l2 (the Triton template's on CUDA), the same norm
    as nn.LayerNorm, not nn.LayerNorm itself: values and gradients."""
    monkeypatch.setenv("NORMMATTERS_NORM_BACKEND", "eager")  # rows.py's analytic formulas, no compilation
    x = torch.randn(37, 96, requires_grad=True)
    ours, theirs = bench_norms.TemplateL2(96), torch.nn.LayerNorm(96)
    y, expected = ours(x), theirs(x)
    torch.testing.assert_close(y, expected)
    torch.testing.assert_close(torch.autograd.grad(y.square().sum(), x)[0],
                               torch.autograd.grad(expected.square().sum(), x)[0])


def test_bench_norms_host_path_times_each_kind_with_its_launches_recorded(bench_norms, capsys):
    """--host-path: the Triton call path of each kind on CPU tensors, its kernels recorded, not run,
    beside LayerNorm's fwd+bwd and an identity autograd.Function (figures, not a timed test)."""
    bench_norms.main(["--host-path", "--kinds", "l1", "topk"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("host path of one fwd+bwd at 8x512, launches recorded (CPU): LayerNorm's whole fwd+bwd ")
    assert "an identity autograd.Function" in lines[0]
    assert [line.split()[0] for line in lines[1:]] == ["l1", "topk"] and all("x LayerNorm's" in l for l in lines[1:])
    with pytest.raises(SystemExit, match="--host-path records the launches on CPU tensors: use --device cpu"):
        bench_norms.main(["--host-path", "--device", "cuda"])
