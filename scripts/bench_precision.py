#!/usr/bin/env python3
"""How accurately each norm kind normalizes when its statistics are accumulated in fp16 or bf16.

For the norm kinds l2, l1, linf, topk (k=8) and rms, each accumulation format (float32: the
package's fast path; fp16 and bf16: fairseq_normmatters.accumulation, every partial sum
rounded), rows of widths 512, 1024 and 4096 and input scales s from 1e-4 to 1e4, the script
normalizes ROWS rows (gamma 1, beta 0) of two families:

    gaussian   x ~ N(0, s^2)
    outliers   the same with features 0-3 at +-50 s (the few large features of Transformer
               activations)

and measures, against the float64 norm of the same float32 input, each row's relative error
||y - y64|| / ||y64|| (inf for a row with inf or NaN) and the share of broken rows: inf, NaN or
all zero (a row collapsed to beta). A configuration is within 1% at a scale when its median
row error is and no row is broken; the table gives the widest run of grid scales around s = 1
where that holds, and the median and worst row errors at s = 1 (bf16's own rounding of the
output, 2^-8 relative at most per element, is part of every bf16 error). The plot draws the
median row error against s, one line per kind (width 1024; scales where most rows break at
the top). A second table quantizes the Gaussian rows of width 1024 to fp8 (e4m3, which
saturates at 448, and e5m2, whose largest finite value is 57344) before each norm, measured
against the float64 norm of the unquantized rows.

    python scripts/bench_precision.py [--out docs/precision.md] [--plot docs/precision.png]
                                      [--rows 256] [--json FILE] [--device cpu|cuda]

On CUDA the narrow formats run the Triton kernel (kernels/triton_narrow.py), whose statistics
are the emulation's bit for bit: the table should come out the same as on CPU.
"""

import argparse
import json
import math
import os
from pathlib import Path

import torch

from fairseq_normmatters import build_norm, kernels
from fairseq_normmatters.accumulation import ACCUMULATE_FORMATS
from fairseq_normmatters.recipes import RecipeError, run_main, write_text_atomically

KINDS = {"l2": {}, "l1": {}, "linf": {}, "topk": {"k": 8}, "rms": {}}
FORMATS = tuple(ACCUMULATE_FORMATS)
WIDTHS = (512, 1024, 4096)
SCALES = tuple(10.0 ** (exponent / 2) for exponent in range(-8, 9))  # 1e-4, 3.2e-4, ..., 1e4
FAMILIES = ("gaussian", "outliers")
OUTLIERS, OUTLIER_SIZE = 4, 50.0
WITHIN = 0.01
PLOT_WIDTH = 1024
SEED = 0
FP8 = {"e4m3": torch.float8_e4m3fn, "e5m2": torch.float8_e5m2}


def rows_of(family: str, width: int, scale: float, rows: int) -> torch.Tensor:
    """float32 rows of `family` at `scale` (seeded: every kind and format sees the same rows)."""
    generator = torch.Generator().manual_seed(SEED)
    x = torch.randn(rows, width, generator=generator, dtype=torch.float64)
    if family == "outliers":
        x[:, :OUTLIERS] = OUTLIER_SIZE * torch.where(x[:, :OUTLIERS] < 0, -1.0, 1.0)
    return (x * scale).float()


def reference(kind: str, x: torch.Tensor) -> torch.Tensor:
    """The float64 norm of x (gamma 1, beta 0): what every format's output is measured against."""
    with torch.no_grad():
        return build_norm(kind, x.shape[1], **KINDS[kind]).to(x.device).double()(x.double())


def measure(kind: str, accumulate: str, x: torch.Tensor, exact: torch.Tensor) -> dict:
    """{"worst": the largest row error, "median": the median one, "broken": share of broken rows}
    of the `accumulate` norm of x against `exact` (reference())."""
    with torch.no_grad():
        y = build_norm(kind, x.shape[1], accumulate=accumulate, **KINDS[kind]).to(x.device)(x).double()
    finite = torch.isfinite(y).all(1)
    broken = ~finite | (y == 0).all(1)
    error = ((y - exact).norm(dim=1) / exact.norm(dim=1)).where(finite, torch.tensor(math.inf, dtype=y.dtype))
    return {"worst": error.max().item(), "median": error.median().item(), "broken": broken.double().mean().item()}


def within_one_percent(record) -> bool:
    return record["median"] <= WITHIN and record["broken"] == 0


def unbroken(record) -> bool:
    return record["broken"] == 0


def scale_range(errors, good=within_one_percent) -> str:
    """The widest run of consecutive grid scales containing 1 whose records are good (by default:
    median error within 1% and no row broken), as '3e-3 .. 1e3', or 'none'."""
    good = [good(record) for record in errors]
    one = SCALES.index(1.0)
    if not good[one]:
        return "none"
    low, high = one, one
    while low > 0 and good[low - 1]:
        low -= 1
    while high < len(SCALES) - 1 and good[high + 1]:
        high += 1
    return f"{short(SCALES[low])} .. {short(SCALES[high])}"


def short(value: float) -> str:
    mantissa, exponent = f"{value:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def broken_share(errors) -> str:
    """'none', or the first grid scale with broken rows, their share there, and the first scale
    where all rows are: 'from s = 1e3 (3% there; all from 1e4)'."""
    some = next(((scale, record["broken"]) for scale, record in zip(SCALES, errors) if record["broken"] > 0), None)
    if some is None:
        return "none"
    every = next((scale for scale, record in zip(SCALES, errors) if record["broken"] == 1), None)
    share = "all" if some[1] == 1 else f"{100 * some[1]:.0f}%" if some[1] >= 0.01 else f"{100 * some[1]:.1f}%"
    rest = "" if some[1] == 1 else f"; all from {short(every)}" if every is not None else "; never all"
    return f"from s = {short(some[0])} ({share} there{rest})"


def run_grid(rows: int, device: str = "cpu"):
    """{(kind, accumulate, width, family): [measure() per scale]}."""
    results = {}
    for width in WIDTHS:
        for family in FAMILIES:
            inputs = [rows_of(family, width, scale, rows).to(device) for scale in SCALES]
            for kind in KINDS:
                exact = [reference(kind, x) for x in inputs]
                for accumulate in FORMATS:
                    results[kind, accumulate, width, family] = [measure(kind, accumulate, x, e)
                                                                for x, e in zip(inputs, exact)]
    return results


def run_fp8_grid(rows: int, device: str = "cpu"):
    """{(kind, fp8 format, accumulate): [measure() per scale]}: Gaussian rows of width PLOT_WIDTH
    quantized to the fp8 format before the norm."""
    inputs = [rows_of("gaussian", PLOT_WIDTH, scale, rows).to(device) for scale in SCALES]
    results = {}
    for kind in KINDS:
        exact = [reference(kind, x) for x in inputs]  # of the unquantized rows
        for name, dtype in FP8.items():
            quantized = [x.to(dtype).float() for x in inputs]
            for accumulate in FORMATS:
                results[kind, name, accumulate] = [measure(kind, accumulate, q, e) for q, e in zip(quantized, exact)]
    return results


def fp8_table(results) -> str:
    one = SCALES.index(1.0)
    lines = ["| kind | fp8 input | accumulate | median row error at s = 1 | no broken row for s in |",
             "|---|---|---|---|---|"]
    lines += [f"| {kind} | {name} | {accumulate} | {errors[one]['median']:.1e} | {scale_range(errors, unbroken)} |"
              for (kind, name, accumulate), errors in results.items()]
    return "\n".join(lines) + "\n"


def table(results) -> str:
    lines = ["| kind | accumulate | width | gaussian: within 1% for s in | gaussian: broken rows | "
             "gaussian: error at s = 1 (median, worst row) | outliers: within 1% for s in | outliers: broken rows |",
             "|---|---|---|---|---|---|---|---|"]
    one = SCALES.index(1.0)
    for kind in KINDS:
        for accumulate in FORMATS:
            for width in WIDTHS:
                gaussian, outliers = (results[kind, accumulate, width, family] for family in FAMILIES)
                lines.append(f"| {kind} | {accumulate} | {width} | {scale_range(gaussian)} | "
                             f"{broken_share(gaussian)} | {gaussian[one]['median']:.1e}, {gaussian[one]['worst']:.1e} | "
                             f"{scale_range(outliers)} | {broken_share(outliers)} |")
    return "\n".join(lines) + "\n"


def first_broken(errors):
    return next((scale for scale, record in zip(SCALES, errors) if record["broken"] > 0), None)


def findings(results) -> str:
    """What the table says at width 1024 for Gaussian rows, one line per narrow format."""
    one, lines = SCALES.index(1.0), []
    for accumulate in FORMATS[1:]:
        per_kind = {kind: results[kind, accumulate, PLOT_WIDTH, "gaussian"] for kind in KINDS}
        broken = [f"{kind} from s = {short(first_broken(errors))}" for kind, errors in per_kind.items()
                  if first_broken(errors)]
        intact = [kind for kind, errors in per_kind.items() if not first_broken(errors)]
        said = ([f"rows break (inf, NaN or all zero): {', '.join(broken)}"] if broken else []) + \
            ([f"no row of {', '.join(intact)} breaks on the grid"] if intact else [])
        medians = [errors[one]["median"] for errors in per_kind.values()]
        lines.append(f"- {accumulate}: {'; '.join(said)}; at s = 1 the median row error is {min(medians):.1e} "
                     f"to {max(medians):.1e}.")
    return "\n".join(lines)


def document(results, fp8_results, rows: int, plot_name) -> str:
    """docs/precision.md: how it was made, what is measured, the findings, the plot, the tables."""
    command = "python scripts/bench_precision.py --out docs/precision.md --plot docs/precision.png"
    described, families, measures = __doc__.split("\n\n")[1:4]  # the docstring's account of the measurement
    measured = "\n\n".join((described.replace("ROWS", str(rows)), families, measures))
    picture = f"\n![median row error against the input scale]({plot_name})\n" if plot_name else ""
    return (f"# Norms accumulating in fp16 and bf16\n\nMade by `{command}` (torch {torch.__version__}, "
            f"{rows} rows a measurement, seeded; on CPU the narrow formats run the emulation of "
            "`fairseq_normmatters.accumulation`, on CUDA the Triton kernel with the same statistics, which "
            "`PARTS=precision scripts/device_checks.sh` compares with this table on a GPU).\n\n"
            f"{measured}\n\nAt width {PLOT_WIDTH}, Gaussian rows:\n\n{findings(results)}\n\n"
            "In fp16 a sum of n terms of size a overflows once n a > 65504: first the sum of squares (l2, "
            "rms), then the sum of |d| (l1), then the sum of x that centers the row (linf and topk, which "
            "sum no more than k values otherwise). bf16 has float32's range: nothing overflows, and its "
            "errors are its 8-bit rounding.\n" + picture + "\n" + table(results) +
            f"\nWith the input quantized to fp8 first:\n\n{fp8_findings(fp8_results)}\n\n" + fp8_table(fp8_results))


def fp8_findings(results) -> str:
    """The median error at s = 1 of each fp8 format over every kind and accumulation."""
    one = SCALES.index(1.0)
    spans = {name: [errors[one]["median"] for (_, fp8, _), errors in results.items() if fp8 == name] for name in FP8}
    return "- " + "; ".join(f"{name} input: median row error {min(values):.1e} to {max(values):.1e} at s = 1 "
                            "over every kind and accumulation" for name, values in spans.items()) + \
        " (the input's own rounding: 3 and 2 bits of significand). e4m3 rounds the rows of the smallest " \
        "inputs entirely to zero (its smallest number is 2^-9), which come out as beta; the overflows of " \
        "fp16 accumulation are those of the table above."


def plot(results, path: Path) -> None:
    """The median row error against s, a panel per format and family, a line per kind."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    figure, axes = plt.subplots(len(FAMILIES), len(FORMATS), figsize=(13, 7), sharex=True, sharey=True)
    ceiling = 10.0  # broken rows (inf error) are drawn here
    for row, family in enumerate(FAMILIES):
        for column, accumulate in enumerate(FORMATS):
            axis = axes[row][column]
            for kind in KINDS:
                median = [ceiling if r["broken"] > 0.5 else min(r["median"], ceiling)
                          for r in results[kind, accumulate, PLOT_WIDTH, family]]
                axis.plot(SCALES, median, marker="o", markersize=3, label=kind)
            axis.axhline(WITHIN, color="grey", linestyle="--", linewidth=1)
            axis.set_xscale("log")
            axis.set_yscale("log")
            axis.set_title(f"{family} rows, accumulating in {accumulate}")
            axis.grid(alpha=0.3, which="both")
            if row == len(FAMILIES) - 1:
                axis.set_xlabel("input scale s")
            if column == 0:
                axis.set_ylabel(f"median row's relative error (width {PLOT_WIDTH})")
    axes[0][0].legend()
    figure.suptitle(f"Error against float64; scales where most rows break (inf, NaN, all zero) drawn at "
                    f"{ceiling:g}; dashed: 1%")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=256, help="rows per measurement (default 256)")
    parser.add_argument("--out", help="write the table here (Markdown)")
    parser.add_argument("--plot", help="write the plot here (PNG)")
    parser.add_argument("--json", help="write every measurement here")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    args = parser.parse_args(argv)
    if args.rows < 1:
        raise RecipeError(f"--rows {args.rows}: give at least 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise RecipeError("--device cuda but torch sees no CUDA device")
    kernels.set_backend(None)
    results = run_grid(args.rows, args.device)
    print(table(results))
    if args.plot:
        plot(results, Path(args.plot))
    if args.out:
        plot_name = None if not args.plot else os.path.relpath(args.plot, Path(args.out).resolve().parent)
        fp8_results = run_fp8_grid(args.rows, args.device)
        write_text_atomically(Path(args.out), document(results, fp8_results, args.rows, plot_name))
    if args.json:
        records = [{"kind": kind, "accumulate": accumulate, "width": width, "family": family, "scale": scale, **record}
                   for (kind, accumulate, width, family), errors in results.items()
                   for scale, record in zip(SCALES, errors)]
        write_text_atomically(Path(args.json), json.dumps(records, indent=1))


if __name__ == "__main__":
    run_main(main, "bench_precision.py")
