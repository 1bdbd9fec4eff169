#!/usr/bin/env python3
"""Measure E[C * scale(x - mean x)] / sigma on seeded Gaussian rows, for every constant.

    python scripts/bench/calibrate_constants.py [--rows 4000] [--sizes 64 512 1024]
"""

import argparse

import torch

from fairseq_normmatters.norms import deviation_scale

SETTINGS = [("l1", "paper", None), ("l1", "gaussian", None), ("l1", 1.0, None),
            ("linf", "paper", None), ("linf", "gaussian", None),
            ("topk", "paper", 8), ("topk", "gaussian", 8)]


def measured_scale_over_sigma(kind, n, constant="paper", k=None, rows=4000, seed=None,
                              mu=5.0, sigma=3.0):
    """Mean of C * scale(d) / sigma over `rows` rows x ~ N(mu, sigma^2)^n (seed defaults to n)."""
    g = torch.Generator().manual_seed(n if seed is None else seed)
    x = mu + sigma * torch.randn(rows, n, generator=g, dtype=torch.float64)
    d = x - x.mean(-1, keepdim=True)
    return float(deviation_scale(d, kind, constant, k).mean() / sigma)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=4000)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 512, 1024])
    args = parser.parse_args(argv)
    print("| kind | constant | " + " | ".join(f"n={n}" for n in args.sizes) + " |")
    print("|---|---|" + "---|" * len(args.sizes))
    for kind, constant, k in SETTINGS:
        name = f"{kind} (k={k})" if k else kind
        ratios = [measured_scale_over_sigma(kind, n, constant, k, args.rows) for n in args.sizes]
        print(f"| {name} | {constant} | " + " | ".join(f"{r:.4f}" for r in ratios) + " |")


if __name__ == "__main__":
    main()
