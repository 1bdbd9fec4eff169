"""The paper's comparison in one command: every configuration x seed trained, evaluated, collected.

    scripts/compare.sh {wmt14,iwslt14} PREPARED OUT [--seeds N] [--configs C ...] [-- fairseq-train args]

For each configuration (default: the benchmark's Transformer l2, l1, bwn, none and the LSTM
nonorm, bwn) and each seed 1..N (default 3) it trains OUT/CONFIG-seedS with
train_{benchmark}.sh --seed S, evaluates it with evaluate.sh (WMT14: beam 4, lenpen 0.6, the
last 5 checkpoints averaged; IWSLT14: beam 5, lenpen 1, as fairseq's example) and finally
writes OUT/results.md and OUT/curves.png with collect_results.py: the seeds' means and spreads,
each configuration's difference from its baseline with sacreBLEU's paired bootstrap test, and
the paper's differences. A run whose results.json exists is skipped; one that stopped half-way
resumes from its checkpoint_last.pt (fairseq-train's own resume); rerun the same command after
any interruption. Arguments after -- go to every fairseq-train (e.g. a shorter schedule).
"""

import argparse
import subprocess
import sys
from pathlib import Path

from . import RecipeError, check_not_half_prepared, run_main
from .collect import main as collect
from .train import BENCHMARKS

DEFAULT_CONFIGS = ("transformer_l2", "transformer_l1", "transformer_bwn", "transformer_none", "lstm_nonorm",
                   "lstm_bwn")
EVALUATION = {"wmt14": ["--average", "5", "--beam", "4", "--lenpen", "0.6"],
              "iwslt14": ["--average", "5", "--beam", "5", "--lenpen", "1.0"]}


def parse_args(argv):
    argv = list(argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(prog="compare.sh", description=__doc__.splitlines()[0])
    parser.add_argument("benchmark", choices=tuple(BENCHMARKS))
    parser.add_argument("prepared", help="made by scripts/prepare_{benchmark}_de_en.sh")
    parser.add_argument("out", help="one folder per configuration and seed, and the results")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 1..N per configuration")
    parser.add_argument("--configs", nargs="+", default=list(DEFAULT_CONFIGS))
    args = parser.parse_args(argv)
    args.extra = extra
    unknown = [c for c in args.configs if c not in BENCHMARKS[args.benchmark][0]]
    if unknown:
        parser.error(f"unknown configuration {', '.join(unknown)} for {args.benchmark}; known: "
                     f"{', '.join(BENCHMARKS[args.benchmark][0])}")
    if args.seeds < 1:
        parser.error(f"--seeds {args.seeds}: needs at least 1")
    return args


def step(program: str, *args) -> None:
    """Run one recipe step (python -m fairseq_normmatters.recipes.PROGRAM), its output shown."""
    result = subprocess.run([sys.executable, "-m", f"fairseq_normmatters.recipes.{program}", *map(str, args)])
    if result.returncode != 0:
        raise RecipeError(f"{program} {' '.join(map(str, args))} exited with {result.returncode}; rerun the same "
                          "compare.sh command to resume from there")


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    check_not_half_prepared(args.prepared)
    out = Path(args.out)
    runs = [(config, seed, out / f"{config}-seed{seed}") for seed in range(1, args.seeds + 1) for config in args.configs]
    for number, (config, seed, run) in enumerate(runs, 1):
        if (run / "results.json").is_file():
            print(f"[compare] {number}/{len(runs)} {run.name}: done before", flush=True)
            continue
        print(f"[compare] {number}/{len(runs)} {run.name}: training", flush=True)
        step("train", "--benchmark", args.benchmark, config, args.prepared, run, *args.extra, "--seed", seed)
        print(f"[compare] {number}/{len(runs)} {run.name}: evaluating", flush=True)
        step("evaluate", run, args.prepared, *EVALUATION[args.benchmark])
    collect([*(str(run) for _, _, run in runs), "--out", str(out / "results.md"), "--plot", str(out / "curves.png")])


if __name__ == "__main__":
    run_main(main, "compare.sh")
