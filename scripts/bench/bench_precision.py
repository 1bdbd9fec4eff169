#!/usr/bin/env python3
"""How accurately each norm kind normalizes in fp16 and bf16, in the three settings users meet.

For the norm kinds l2, l1, linf, topk (k=8) and rms, the formats fp16 and bf16 (and float32 as
the baseline), rows of widths 512, 1024 and 4096 and input scales s from 1e-4 to 1e4, the script
normalizes ROWS rows (gamma 1, beta 0) in each setting:

    storage    narrow storage, float32 statistics: the input rounded to the format, every
               statistic computed in float32, the output rounded (fairseq --fp16, --bf16 and
               --amp, torch.autocast; torch's LayerNorm, apex's and Liger's kernels)
    wide-mean  narrow accumulation, float32 mean: the centering mean in float32 (as a careful
               kernel keeps it, or Welford's running mean, which cannot overflow), the sums of
               the scale and every other operation in the format
    narrow     everything narrow: every operation and partial sum in the format, each mean a
               narrow sum then divided (--norm-accumulate fp16/bf16: the emulation on CPU, the
               Triton kernel on CUDA)

of two families:

    gaussian   x ~ N(0, s^2)
    outliers   the same with features 0-3 at +-50 s (the few large features of Transformer
               activations)

and measures, against the float64 norm of the same float32 input, each row's relative error
||y - y64|| / ||y64|| (inf for a row with inf or NaN) and the share of broken rows: inf, NaN or
all zero (a row collapsed to beta). A setting is within 1% at a scale when its median row error
is and no row is broken; the tables give the widest run of grid scales around s = 1 where that
holds, the median and worst row errors at s = 1, and the error of the input's own rounding to
the format (the float64 norm of the rounded input): no setting can do better than that. Small
inputs: eps = 1e-5 hides underflow (it dominates the float64 reference too), so a second table
gives the share of the scale's terms (d^2 for l2 and rms, |d| else) that are zero or subnormal
in the format and the error with eps scaled to the input (1e-5 s^2 for l2 and rms, 1e-5 s else).
A last table quantizes the Gaussian rows of width 1024 to fp8 (e4m3, which saturates at 448,
and e5m2, whose largest finite value is 57344) before each norm.

    python scripts/bench/bench_precision.py [--out docs/precision.md] [--plot docs/precision.png]
                                      [--rows 256] [--json FILE] [--device cpu|cuda]

On CUDA the narrow setting runs the Triton kernel (kernels/triton_narrow.py), whose statistics
are the emulation's bit for bit: its rows should come out the same as on CPU.
"""

import argparse
import json
import math
import os
from pathlib import Path

import torch

from fairseq_normmatters import build_norm, kernels
from fairseq_normmatters.accumulation import pairwise_sum, rows_in_format
from fairseq_normmatters.constants import resolve_constant
from fairseq_normmatters.recipes.common import RecipeError, run_main, write_text_atomically

KINDS = {"l2": {}, "l1": {}, "linf": {}, "topk": {"k": 8}, "rms": {}}
FORMATS = {"float32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
NARROW_FORMATS = ("fp16", "bf16")
SETTINGS = ("storage", "wide-mean", "narrow")
WIDTHS = (512, 1024, 4096)
SCALES = tuple(10.0 ** (exponent / 2) for exponent in range(-8, 9))  # 1e-4, 3.2e-4, ..., 1e4
FAMILIES = ("gaussian", "outliers")
OUTLIERS, OUTLIER_SIZE = 4, 50.0
WITHIN = 0.01
EPS = 1e-5
MAIN_WIDTH = 1024
SEED = 0
FP8 = {"e4m3": torch.float8_e4m3fn, "e5m2": torch.float8_e5m2}


def rows_of(family: str, width: int, scale: float, rows: int) -> torch.Tensor:
    """float32 rows of `family` at `scale` (seeded: every kind and setting sees the same rows)."""
    generator = torch.Generator().manual_seed(SEED)
    x = torch.randn(rows, width, generator=generator, dtype=torch.float64)
    if family == "outliers":
        x[:, :OUTLIERS] = OUTLIER_SIZE * torch.where(x[:, :OUTLIERS] < 0, -1.0, 1.0)
    return (x * scale).float()


def configurations():
    """(format, setting) pairs measured: float32 storage as the baseline, then every setting."""
    return [("float32", "storage")] + [(f, setting) for f in NARROW_FORMATS for setting in SETTINGS]


def normalize(kind: str, x: torch.Tensor, fmt: str, setting: str, eps: float = EPS) -> torch.Tensor:
    """The `kind` norm of x (gamma 1, beta 0) in `setting` with the format `fmt`, as float64."""
    n, options = x.shape[1], KINDS[kind]
    with torch.no_grad():
        if setting == "storage":  # float32 statistics of the rounded input (as ATen's LayerNorm of fp16 computes)
            y = build_norm(kind, n, eps=eps, **options).to(x.device)(x.to(FORMATS[fmt]).float()).to(FORMATS[fmt])
        elif setting == "narrow":
            y = build_norm(kind, n, eps=eps, accumulate=fmt, **options).to(x.device)(x)
        else:
            constant = resolve_constant(kind, n, "paper", options.get("k")) if kind in ("l1", "linf", "topk") else 1.0
            y = rows_in_format(x, kind, None, None, eps, constant, options.get("k"), FORMATS[fmt], float32_mean=True)[0]
    return y.double()


def reference(kind: str, x: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """The float64 norm of x (gamma 1, beta 0)."""
    with torch.no_grad():
        return build_norm(kind, x.shape[1], eps=eps, **KINDS[kind]).to(x.device).double()(x.double())


def measure(y: torch.Tensor, exact: torch.Tensor) -> dict:
    """{"worst": the largest row error, "median": the median one, "broken": share of broken rows}."""
    finite = torch.isfinite(y).all(1)
    broken = ~finite | (y == 0).all(1)
    error = ((y - exact).norm(dim=1) / exact.norm(dim=1)).where(finite, torch.tensor(math.inf, dtype=y.dtype))
    return {"worst": error.max().item(), "median": error.median().item(), "broken": broken.double().mean().item()}


def scaled_eps(kind: str, scale: float) -> float:
    """eps in proportion to the input: inside the root (l2, rms) it is compared with s^2."""
    return EPS * (scale ** 2 if kind in ("l2", "rms") else scale)


def tiny_terms(kind: str, x: torch.Tensor, fmt: str):
    """(the share of the scale's terms, d^2 (l2, rms) or |d|, that are zero; that are zero or
    subnormal) in the format, with d centered as the narrow setting centers it."""
    dtype = FORMATS[fmt]
    v = x.to(dtype)
    d = v if kind == "rms" else v - pairwise_sum(v) / v.shape[-1]
    terms = (d * d if kind in ("l2", "rms") else d).abs()
    return (terms == 0).double().mean().item(), (terms < torch.finfo(dtype).tiny).double().mean().item()


def run_grid(rows: int, device: str = "cpu"):
    """{"errors": {(kind, fmt, setting, width, family): [measure() per scale]}, "input": {(kind,
    fmt, width, family): [the input rounding's measure() per scale]}, "scaled": {(kind, fmt,
    setting): [measure() with eps scaled, per scale]}, "tiny": {(kind, fmt): [tiny_terms() per
    scale]}} (the last two for Gaussian rows of MAIN_WIDTH)."""
    grid = {"errors": {}, "input": {}, "scaled": {}, "tiny": {}}
    for width in WIDTHS:
        for family in FAMILIES:
            inputs = [rows_of(family, width, scale, rows).to(device) for scale in SCALES]
            for kind in KINDS:
                exact = [reference(kind, x) for x in inputs]
                for fmt, setting in configurations():
                    grid["errors"][kind, fmt, setting, width, family] = [
                        measure(normalize(kind, x, fmt, setting), e) for x, e in zip(inputs, exact)]
                for fmt in NARROW_FORMATS:
                    grid["input"][kind, fmt, width, family] = [
                        measure(reference(kind, x.to(FORMATS[fmt]).float()), e) for x, e in zip(inputs, exact)]
                if (width, family) == (MAIN_WIDTH, "gaussian"):
                    small_inputs(grid, kind, inputs)
    return grid


def small_inputs(grid, kind: str, inputs) -> None:
    """The measurements with eps scaled to the input, and the share of tiny terms."""
    for fmt in NARROW_FORMATS:
        grid["tiny"][kind, fmt] = [tiny_terms(kind, x, fmt) for x in inputs]
        for setting in SETTINGS:
            grid["scaled"][kind, fmt, setting] = [
                measure(normalize(kind, x, fmt, setting, scaled_eps(kind, s)), reference(kind, x, scaled_eps(kind, s)))
                for x, s in zip(inputs, SCALES)]


def run_fp8_grid(rows: int, device: str = "cpu"):
    """{(kind, fp8 format, fmt, setting): [measure() per scale]}: Gaussian rows of MAIN_WIDTH
    quantized to the fp8 format before the norm, against the float64 norm of the rows unquantized."""
    inputs = [rows_of("gaussian", MAIN_WIDTH, scale, rows).to(device) for scale in SCALES]
    results = {}
    for kind in KINDS:
        exact = [reference(kind, x) for x in inputs]
        for name, dtype in FP8.items():
            quantized = [x.to(dtype).float() for x in inputs]
            for fmt, setting in (("float32", "storage"), ("fp16", "storage"), ("fp16", "narrow"), ("bf16", "narrow")):
                results[kind, name, fmt, setting] = [measure(normalize(kind, q, fmt, setting), e)
                                                     for q, e in zip(quantized, exact)]
    return results


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


def first_broken(errors):
    return next((scale for scale, record in zip(SCALES, errors) if record["broken"] > 0), None)


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


def input_overflow(fmt: str) -> str:
    """The first grid scale whose outlier rows overflow the format itself (OUTLIER_SIZE * s > max)."""
    largest = torch.finfo(FORMATS[fmt]).max
    scale = next((s for s in SCALES if OUTLIER_SIZE * s > largest), None)
    return "never on the grid" if scale is None else f"from s = {short(scale)}"


def main_table(grid) -> str:
    one = SCALES.index(1.0)
    lines = ["| kind | format | setting | gaussian: within 1% for s in | gaussian: broken rows | "
             "gaussian: error at s = 1 (median, worst row) | input rounding alone at s = 1 (median) | "
             "outliers: within 1% for s in | outliers: broken rows |", "|---|---|---|---|---|---|---|---|---|"]
    for kind in KINDS:
        for fmt, setting in configurations():
            gaussian, outliers = (grid["errors"][kind, fmt, setting, MAIN_WIDTH, family] for family in FAMILIES)
            floor = f"{grid['input'][kind, fmt, MAIN_WIDTH, 'gaussian'][one]['median']:.1e}" if fmt != "float32" else "-"
            lines.append(f"| {kind} | {fmt} | {setting} | {scale_range(gaussian)} | {broken_share(gaussian)} | "
                         f"{gaussian[one]['median']:.1e}, {gaussian[one]['worst']:.1e} | {floor} | "
                         f"{scale_range(outliers)} | {broken_share(outliers)} |")
    return "\n".join(lines) + "\n"


def width_table(grid) -> str:
    lines = ["| kind | format | setting | " + " | ".join(f"gaussian rows break at width {w}" for w in WIDTHS) + " |",
             "|---|---|---|" + "---|" * len(WIDTHS)]
    for kind in KINDS:
        for fmt in NARROW_FORMATS:
            for setting in SETTINGS:
                cells = [broken_share(grid["errors"][kind, fmt, setting, w, "gaussian"]) for w in WIDTHS]
                lines.append(f"| {kind} | {fmt} | {setting} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def small_table(grid) -> str:
    smallest = 0
    lines = [f"| kind | format | setting | terms zero, zero or subnormal at s = {short(SCALES[smallest])} | "
             f"median error at s = {short(SCALES[smallest])}, eps 1e-5 | the same, eps scaled | "
             "within 1% for s in, eps scaled |", "|---|---|---|---|---|---|---|"]
    for kind in KINDS:
        for fmt in NARROW_FORMATS:
            for setting in SETTINGS:
                zero, tiny = grid["tiny"][kind, fmt][smallest]
                tiny = f"{100 * zero:.0f}%, {100 * tiny:.0f}%" if setting != "storage" else "- (float32)"
                fixed = grid["errors"][kind, fmt, setting, MAIN_WIDTH, "gaussian"][smallest]["median"]
                scaled = grid["scaled"][kind, fmt, setting]
                lines.append(f"| {kind} | {fmt} | {setting} | {tiny} | {fixed:.1e} | {scaled[smallest]['median']:.1e} "
                             f"| {scale_range(scaled)} |")
    return "\n".join(lines) + "\n"


def fp8_table(results) -> str:
    one = SCALES.index(1.0)
    lines = ["| kind | fp8 input | format | setting | median row error at s = 1 | no broken row for s in |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {kind} | {name} | {fmt} | {setting} | {errors[one]['median']:.1e} | {scale_range(errors, unbroken)} |"
              for (kind, name, fmt, setting), errors in results.items()]
    return "\n".join(lines) + "\n"


def breaks_in_words(grid, fmt: str, setting: str) -> str:
    """Which kinds' Gaussian rows of MAIN_WIDTH break from which scale in one setting."""
    per_kind = {kind: grid["errors"][kind, fmt, setting, MAIN_WIDTH, "gaussian"] for kind in KINDS}
    broken = [f"{kind} from s = {short(first_broken(errors))}" for kind, errors in per_kind.items()
              if first_broken(errors)]
    intact = [kind for kind, errors in per_kind.items() if not first_broken(errors)]
    return "; ".join(([f"rows break (inf, NaN or all zero): {', '.join(broken)}"] if broken else []) +
                     ([f"no row of {', '.join(intact)} breaks on the grid"] if intact else []))


def findings(grid) -> str:
    """What the tables say, in words, read from the measurements."""
    one, lines = SCALES.index(1.0), []
    for fmt in NARROW_FORMATS:
        for setting in SETTINGS:
            medians = [grid["errors"][kind, fmt, setting, MAIN_WIDTH, "gaussian"][one]["median"] for kind in KINDS]
            lines.append(f"- {fmt}, {setting}: {breaks_in_words(grid, fmt, setting)}; at s = 1 the median row error is "
                         f"{min(medians):.1e} to {max(medians):.1e}.")
    floors = [grid["input"][kind, "fp16", MAIN_WIDTH, "gaussian"][one]["median"] for kind in KINDS]
    storage = [grid["errors"][kind, "fp16", "storage", MAIN_WIDTH, "gaussian"][one]["median"] for kind in KINDS]
    zero, tiny = grid["tiny"]["l2", "fp16"][0]
    lines.append(f"- The input's own rounding to fp16 costs {min(floors):.1e} to {max(floors):.1e} at s = 1; the "
                 f"storage setting's {min(storage):.1e} to {max(storage):.1e} is that and the output's rounding, "
                 "for every kind alike. The outlier rows overflow fp16 itself "
                 f"{input_overflow('fp16')} ({OUTLIER_SIZE:g} s > 65504): no accumulation helps there.")
    lines.append(f"- At s = 1e-4, {100 * zero:.0f}% of l2's fp16 squares are zero ({100 * tiny:.0f}% zero or "
                 "subnormal), yet with eps = 1e-5 "
                 "its error looks small because eps dominates the float64 reference too; with eps scaled to the "
                 "input (the table of small inputs) the underflow shows.")
    return "\n".join(lines)


def document(grid, fp8_results, rows: int, plot_name) -> str:
    """docs/precision.md: how it was made, which setting a user is in, the findings, the tables."""
    command = "python scripts/bench/bench_precision.py --out docs/precision.md --plot docs/precision.png"
    measured = "\n\n".join(__doc__.split("\n\n")[1:5]).replace("ROWS", str(rows))
    picture = f"\n![median row error against the input scale]({plot_name})\n" if plot_name else ""
    return (f"# Norms in fp16 and bf16: storage, accumulation, everything narrow\n\nMade by `{command}` (torch "
            f"{torch.__version__}, {rows} rows a measurement, seeded; on CPU the narrow setting runs the emulation "
            "of `fairseq_normmatters.accumulation`, on CUDA the Triton kernel with the same statistics, which "
            "`PARTS=precision scripts/bench/device_checks.sh` compares with this table on a GPU).\n\n"
            f"{measured}\n\n## Which setting a training run is in\n\n{USERS}\n\n"
            f"## Findings (Gaussian rows of width {MAIN_WIDTH})\n\n{findings(grid)}\n\n{WHY}\n" + picture +
            f"\n## Width {MAIN_WIDTH}\n\n" + main_table(grid) +
            "\n## Where Gaussian rows break, by width\n\n" + width_table(grid) +
            f"\n## Small inputs: underflow that eps hides (Gaussian rows, width {MAIN_WIDTH})\n\n" + small_table(grid) +
            "\n## fp8 input\n\nThe input quantized to fp8 first: its own rounding (3 and 2 bits of significand) is "
            "the error at s = 1 in every setting; e4m3 rounds the smallest inputs to zero (its smallest number is "
            "2^-9), which come out as beta.\n\n" + fp8_table(fp8_results))


USERS = """A model trained with fairseq `--fp16`, `--bf16` or `--amp`, or under `torch.autocast`, is in
the **storage** setting: activations are stored in the narrow format, and every layer norm,
torch's (ATen's, apex's) and this package's l1 / linf / topk / rms (which upcast to float32),
computes its statistics in float32. There the kinds differ by their float32 arithmetic only:
nothing overflows below the format's own range, and the error is the input's rounding.
`--norm-accumulate fp16|bf16` (`build_norm(..., accumulate=...)`) is the **narrow** setting: it
measures what the paper's argument is about, a kernel whose sums are narrow (its backward, on
every device, is the float32 analytic one at the narrow statistics). **wide-mean** is
no option of the package: it shows a narrow kernel written with care (a float32 or Welford mean),
where only the scale's own sum is narrow."""

WHY = """In fp16 a sum of n terms of size a overflows once n a > 65504. In the narrow setting the sum
of squares overflows first (l2, rms), then the sum of |d| (l1), then the sum of x that centers
the row (linf and topk, whose scale sums no more than k values). With a float32 mean
(wide-mean) the centering cannot overflow: linf holds as far as the input does, topk until its
sum of k values overflows (k max|d| > 65504), and l2 and l1 break where their own sums overflow,
as in the narrow setting: the paper's claim is about these two settings, not about training
with --fp16. bf16 has float32's range: nothing overflows, its errors are its 8-bit rounding."""


def plot(grid, path: Path) -> None:
    """The median row error against s: a panel per format and setting, a line per kind."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    figure, axes = plt.subplots(len(NARROW_FORMATS), len(SETTINGS), figsize=(14, 7), sharex=True, sharey=True)
    ceiling = 10.0  # broken rows (inf error) are drawn here
    for row, fmt in enumerate(NARROW_FORMATS):
        for column, setting in enumerate(SETTINGS):
            axis = axes[row][column]
            for kind in KINDS:
                median = [ceiling if r["broken"] > 0.5 else min(r["median"], ceiling)
                          for r in grid["errors"][kind, fmt, setting, MAIN_WIDTH, "gaussian"]]
                axis.plot(SCALES, median, marker="o", markersize=3, label=kind)
            axis.axhline(WITHIN, color="grey", linestyle="--", linewidth=1)
            axis.set_xscale("log")
            axis.set_yscale("log")
            axis.set_title(f"{fmt}, {setting}")
            axis.grid(alpha=0.3, which="both")
            if row == len(NARROW_FORMATS) - 1:
                axis.set_xlabel("input scale s")
            if column == 0:
                axis.set_ylabel(f"median row error (width {MAIN_WIDTH})")
    axes[0][0].legend()
    figure.suptitle(f"Gaussian rows against float64; scales where most rows break drawn at {ceiling:g}; dashed: 1%")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def records(grid) -> list:
    """Every measurement as a flat record (--json)."""
    out = [{"kind": kind, "format": fmt, "setting": setting, "width": width, "family": family, "eps": "1e-5",
            "scale": scale, **record}
           for (kind, fmt, setting, width, family), errors in grid["errors"].items()
           for scale, record in zip(SCALES, errors)]
    out += [{"kind": kind, "format": fmt, "setting": setting, "width": MAIN_WIDTH, "family": "gaussian",
             "eps": "scaled", "scale": scale, **record}
            for (kind, fmt, setting), errors in grid["scaled"].items() for scale, record in zip(SCALES, errors)]
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=256, help="rows per measurement (default 256)")
    parser.add_argument("--out", help="write the tables here (Markdown)")
    parser.add_argument("--plot", help="write the plot here (PNG)")
    parser.add_argument("--json", help="write every measurement here")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    args = parser.parse_args(argv)
    if args.rows < 1:
        raise RecipeError(f"--rows {args.rows}: give at least 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise RecipeError("--device cuda but torch sees no CUDA device")
    kernels.set_backend(None)
    grid = run_grid(args.rows, args.device)
    print(main_table(grid))
    if args.plot:
        plot(grid, Path(args.plot))
    if args.out:
        plot_name = None if not args.plot else os.path.relpath(args.plot, Path(args.out).resolve().parent)
        write_text_atomically(Path(args.out), document(grid, run_fp8_grid(args.rows, args.device), args.rows,
                                                       plot_name))
    if args.json:
        write_text_atomically(Path(args.json), json.dumps(records(grid), indent=1))


if __name__ == "__main__":
    run_main(main, "bench_precision.py")
