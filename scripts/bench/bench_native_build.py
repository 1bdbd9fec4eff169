#!/usr/bin/env python3
"""What the native backend's design costs: its build time against the two ways torch offers to
build C++ (a TORCH_LIBRARY op, a pybind11 extension), and one call through ctypes.

Builds kernels/native_rows.cpp three times with the native backend's own compiler command:
as it is (standard library only), with <torch/library.h> and a TORCH_LIBRARY block, and with
<torch/extension.h> and a PYBIND11_MODULE block (torch's and Python's headers added), and
prints each time and its ratio to the first. Then times the native forward of one row of 8
features (a ctypes call and the few lines of Python around it).

    python scripts/bench/bench_native_build.py [--repeats 3]
"""

import argparse
import statistics
import subprocess
import sysconfig
import tempfile
import time
import timeit
from pathlib import Path

import torch
from torch.utils import cpp_extension

from fairseq_normmatters.kernels import native

TORCH_LIBRARY = '\n#include <torch/library.h>\nTORCH_LIBRARY(normmatters_bench, m) {}\n'
PYBIND = '\n#include <torch/extension.h>\nPYBIND11_MODULE(normmatters_bench, m) {}\n'


def build_seconds(extra_source: str, include_dirs, scratch: Path, repeats: int) -> float:
    """Median wall time of the native backend's compile command on native_rows.cpp + extra_source."""
    source = scratch / f"rows{len(extra_source)}.cpp"
    source.write_text(native.SOURCE.read_text() + extra_source)
    command = native.compile_command(scratch / "out.so")
    command[command.index(str(native.SOURCE))] = str(source)
    command += [f"-I{path}" for path in include_dirs]
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch_headers = cpp_extension.include_paths()
    python_headers = [sysconfig.get_paths()["include"]]
    with tempfile.TemporaryDirectory() as scratch:
        builds = {"ctypes (standard library only)": build_seconds("", [], Path(scratch), args.repeats),
                  "TORCH_LIBRARY op": build_seconds(TORCH_LIBRARY, torch_headers, Path(scratch), args.repeats),
                  "pybind11 extension": build_seconds(PYBIND, torch_headers + python_headers, Path(scratch),
                                                      args.repeats)}
    plain = next(iter(builds.values()))
    print(f"build of native_rows.cpp ({' '.join(native.compile_command(Path('out.so'))[:1])}, median of {args.repeats}):")
    for name, seconds in builds.items():
        print(f"  {name:32s} {seconds:6.2f} s  {seconds / plain:5.2f}x")
    x = torch.randn(1, 8)
    native.forward_rows(x, None, None, "l1", 1.25, 1e-5, 0)  # builds or loads the library
    calls = 20000
    seconds = min(timeit.repeat(lambda: native.forward_rows(x, None, None, "l1", 1.25, 1e-5, 0),
                                number=calls, repeat=5)) / calls
    print(f"native forward of one row of 8 (ctypes call and its Python): {seconds * 1e6:.2f} us")


if __name__ == "__main__":
    main()
