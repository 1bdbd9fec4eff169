"""The benchmark scripts run as the README says and write the records it documents (their
timings are not asserted: benchmarks are not timed tests)."""

import json
import os
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
    flags = ["--kernels-only"] if scope == "kernels" else []
    result = subprocess.run([sys.executable, str(REPO / "scripts/bench_norms.py"), "--quick",
                             "--kinds", "l1", "rms", "--json", str(out), *flags],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    records = json.loads(out.read_text())
    assert [r["kind"] for r in records] == ["l1", "rms"]
    for r in records:
        assert {"kind", "device", "dtype", "shape", "ms", "layernorm_ms", "ratio"} <= set(r)
        assert (r["device"], r["dtype"], r["shape"], r["backend"]) == ("cpu", "float32", [4096, 512], "native")
        assert r["scope"] == scope and r["ms"] > 0 and len(r["round_ratios"]) == 5  # --quick: 5 rounds
        assert r["ratio"] == statistics.median(r["round_ratios"]) > 0
    assert "ratio" in result.stdout and "worst ratio" in result.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_bench_norms_rejects_cuda_without_a_gpu():
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, str(REPO / "scripts/bench_norms.py"), "--device", "cuda"],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode != 0
    assert "--device cuda but torch sees no CUDA device" in result.stderr
