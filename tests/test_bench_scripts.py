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
    result = subprocess.run([sys.executable, str(REPO / "scripts/bench_norms.py"), "--quick",
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
    """scripts/bench_norms.py as a module of this process (the package is imported already, so
    its argument checks run without a new interpreter)."""
    spec = importlib.util.spec_from_file_location("bench_norms", REPO / "scripts/bench_norms.py")
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
    import calibrate_constants  # scripts/calibrate_constants.py
    calibrate_constants.main(["--rows", "2000", "--sizes", "64", "512"])
    rows = [line.split("|")[1:-1] for line in capsys.readouterr().out.splitlines()[2:]]
    assert [(kind.strip(), constant.strip()) for kind, constant, *_ in rows] == \
        [(f"{kind} (k={k})" if k else kind, str(constant)) for kind, constant, k in calibrate_constants.SETTINGS]
    ratios = {(kind.strip(), constant.strip()): [float(r) for r in values] for kind, constant, *values in rows}
    assert all(abs(r - 1) < 0.02 for r in ratios[("l1", "gaussian")] + ratios[("linf", "gaussian")])
    assert all(1.3 < r < 1.5 for r in ratios[("linf", "paper")])  # the supplement's C_Linf, as test_norms


def test_bench_precision_writes_the_table_the_plot_and_the_records(tmp_path, capsys):
    """A few rows per measurement: the table has a line per kind x format x width, float32
    accumulation holds over the whole grid, fp16's l2 breaks before l1 and l1 before linf
    (the sums of squares, of |d| and of x overflow 65504 in turn), bf16 breaks nowhere."""
    import bench_precision  # scripts/bench_precision.py
    out, plot, records = tmp_path / "precision.md", tmp_path / "precision.png", tmp_path / "precision.json"
    bench_precision.main(["--rows", "8", "--out", str(out), "--plot", str(plot), "--json", str(records)])
    document = out.read_text()
    lines = document[document.index("| kind | accumulate |"):].split("\n\n")[0].splitlines()
    rows = {tuple(cell.strip() for cell in line.split("|")[1:4]): [cell.strip() for cell in line.split("|")[4:-1]]
            for line in lines[2:]}
    assert len(rows) == 5 * 3 * 3 and capsys.readouterr().out.startswith(lines[0])
    assert "Made by `python scripts/bench_precision.py --out docs/precision.md" in document
    assert "normalizes 8 rows" in document and "![median row error against the input scale](precision.png)" in document
    assert "- fp16: rows break (inf, NaN or all zero): l2 from s = " in document
    assert "- bf16: no row of l2, l1, linf, topk, rms breaks on the grid; " in document
    fp8 = document[document.index("| kind | fp8 input |"):].splitlines()[2:]
    assert len(fp8) == 5 * 2 * 3 and all(0.01 < float(line.split("|")[4]) < 0.1 for line in fp8)  # fp8's rounding
    assert all(cells[0] == "1e-4 .. 1e4" and cells[1] == "none" for (_, accumulate, _), cells in rows.items()
               if accumulate in ("float32", "bf16"))

    def first_broken(kind):
        return float(rows[kind, "fp16", "1024"][1].split()[3])  # "from s = 1e1 (all there)"
    assert first_broken("l2") < first_broken("l1") < first_broken("linf")
    assert plot.read_bytes()[:4] == b"\x89PNG"
    measured = json.loads(records.read_text())
    assert len(measured) == 5 * 3 * 3 * 2 * 17 and {"worst", "median", "broken"} <= set(measured[0])
