"""The paper's comparison in one command: every configuration x seed trained, evaluated, collected.

    scripts/compare.sh {wmt14,iwslt14} PREPARED OUT [--seeds N] [--configs C ...] [--parallel P]
                       [-- fairseq-train args]

For each configuration (default: the benchmark's Transformer l2, l1, bwn, none and the LSTM
nonorm, bwn) and each seed 1..N (default 3) it trains OUT/CONFIG-seedS as train_{benchmark}.sh
does with --seed S, every configuration in one precision (on GPUs bf16 autocast where the GPU has
bf16, else amp; float32 on a CPU; --precision [CONFIG=]P for a low-precision experiment such as
fp16), evaluates it as evaluate.sh does (WMT14: beam 4, lenpen 0.6, the last 5
checkpoints averaged; IWSLT14: beam 5, lenpen 1, as fairseq's example) and finally writes
OUT/results.md and OUT/curves.png with collect_results.py: the seeds' means and spreads, each
configuration's difference from its baseline with sacreBLEU's paired bootstrap test, and the
paper's differences, and says at the end at how many updates the runs compare: on their
plateau, at their schedule's budget (and whether one doubling of it could change a difference),
or in early training (the rules are below). --preflight trains each configuration a few hundred
updates first and flags a bad start (recipes/run/preflight.py). A run whose results.json exists is
skipped; one that stopped half-way resumes from its checkpoint_last.pt (fairseq-train's own
resume); rerun the same command after any interruption. Arguments after -- go to every fairseq-train (e.g. a
shorter schedule). A run begun as another experiment than this command would train
(recipes/run/identity.py: other training flags, other data by content, another batch in tokens;
not another place, GPU count or split of the same batch) is neither counted nor resumed:
compare.sh names the difference and stops before training anything; use another OUT, or
--retrain to move those runs aside (kept, as RUN.replaced-DATE) and train them anew. A run
resumed on another GPU layout or under other software versions is said on the screen and in
the table. --direction (de-en or en-de) must be the one PREPARED was made for
(prepare_*.sh --direction).

--parallel P runs P runs side by side, each with its share of the machine: 1/P of the CPU
cores (OMP_NUM_THREADS) or of the visible GPUs (CUDA_VISIBLE_DEVICES). The screen gets one line
per run when it starts and when it ends (with the time so far and an estimate of the rest);
each run's whole output goes to OUT/CONFIG-seedS/compare.log, whose last lines are shown if a
step fails. Once a run is evaluated, the checkpoints that neither its average nor a resume needs
are removed (evaluate.sh --remove-unneeded-checkpoints; --keep-checkpoints keeps them).

Where the runs run is the launcher's: --launcher local (local.py, this machine) or slurm
(launch/slurm/, each run a job of a SLURM cluster); the same runs, folders, logs, table and plot
(run/runs.py, launch/progress.py, report/).
"""

import argparse
import dataclasses
import os
import sys
from pathlib import Path
from typing import Dict, Mapping, Optional, Tuple

from .common import DIRECTIONS, RecipeError, check_not_half_prepared, prepared_direction, run_main
from .launch.local import compare_locally
from .launch.slurm.launcher import compare_on_slurm, preflight_on_slurm
from .launch.slurm.options import add_slurm_options, check_slurm_options
from .run.configs import BENCHMARKS, PRECISIONS
from .run.convergence import RULES
from .run.preflight import PREFLIGHT_UPDATES, preflight_here, report
from .run.runs import Run

DEFAULT_CONFIGS = ("transformer_l2", "transformer_l1", "transformer_bwn", "transformer_none", "lstm_nonorm",
                   "lstm_bwn")


@dataclasses.dataclass(frozen=True)
class Settings:
    """A comparison's settings, made once by compare.sh's parser (parse_args, every check done)
    and passed down to the launchers, the runs and the report, which read and never change them.
    The fields are compare.sh's options (--help), then what the parser derives from them."""
    benchmark: str
    prepared: str
    out: str
    seeds: int
    configs: Tuple[str, ...]
    parallel: int
    direction: Optional[str]
    precision: Tuple[str, ...]
    retrain: bool
    keep_checkpoints: bool
    preflight: bool
    preflight_updates: int
    launcher: str
    # --launcher slurm (launch/slurm/options.py)
    partition: Optional[str]
    gpus_per_node: int
    gres: Optional[str]
    nodes: int
    cpus_per_run: Optional[int]
    mem: Optional[str]
    account: Optional[str]
    qos: Optional[str]
    constraint: Optional[str]
    exclusive: bool
    time: str
    setup: Tuple[str, ...]
    python: Optional[str]
    sbatch: Tuple[str, ...]
    max_jobs: int
    resubmit: Tuple[str, ...]
    dry_run: bool
    wait: bool
    poll: int
    # derived: the fairseq-train arguments after --, each configuration's precision where
    # --precision names one, and with --launcher slurm the GPU request and time limit of a job
    extra: Tuple[str, ...]
    precisions: Mapping[str, str]
    gpu_request: Optional[Mapping[str, object]] = None
    time_minutes: Optional[int] = None

    @classmethod
    def of(cls, parsed: argparse.Namespace) -> "Settings":
        """The settings of a checked namespace, its lists made tuples."""
        values = {field.name: getattr(parsed, field.name, field.default) for field in dataclasses.fields(cls)}
        return cls(**{name: tuple(value) if isinstance(value, list) else value for name, value in values.items()})


def parse_args(argv) -> Settings:
    argv = list(argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(prog="compare.sh", description=__doc__.splitlines()[0], epilog=RULES)
    parser.add_argument("benchmark", choices=tuple(BENCHMARKS))
    parser.add_argument("prepared", help="made by scripts/prepare_{benchmark}_de_en.sh")
    parser.add_argument("out", help="one folder per configuration and seed, and the results")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 1..N per configuration")
    parser.add_argument("--configs", nargs="+", default=list(DEFAULT_CONFIGS))
    parser.add_argument("--parallel", type=int, default=1, metavar="P",
                        help="runs side by side, each on 1/P of the CPU cores or GPUs (default 1)")
    parser.add_argument("--direction", choices=tuple(DIRECTIONS),
                        help="the translation direction; default: the one PREPARED was made for")
    parser.add_argument("--precision", action="append", default=[], metavar="[CONFIG=]P",
                        help="train CONFIG in P (fp16, amp, bf16, fp32) instead of the comparison's one precision "
                             "(on GPUs bf16 autocast where the GPU has bf16, else amp; float32 on a CPU); P alone: "
                             "every configuration; repeatable. The runs of the other configurations keep theirs, "
                             "and stay valid; the verdict says when the compared rows differ in precision")
    parser.add_argument("--retrain", action="store_true",
                        help="move aside (kept, renamed RUN.replaced-DATE) and train again the runs begun as "
                             "another experiment")
    parser.add_argument("--keep-checkpoints", action="store_true",
                        help="keep every checkpoint of an evaluated run (default: only those its average "
                             "and a resume need)")
    parser.add_argument("--preflight", action="store_true",
                        help="before the grid: train each configuration at its full size for --preflight-updates "
                             "updates on one GPU (a SLURM job with --launcher slurm) and print its first loss against "
                             "a uniform guess, last loss, loss scale, overflows, tokens/s, peak memory and the "
                             "projected GPU-hours of the grid; exit 1 naming a configuration that starts more than 2 "
                             "bits above uniform, whose loss scale collapses, or that diverges (recipes/run/preflight.py)")
    parser.add_argument("--preflight-updates", type=int, default=PREFLIGHT_UPDATES, metavar="N",
                        help=f"updates of each configuration's preflight (default {PREFLIGHT_UPDATES})")
    parser.add_argument("--launcher", choices=("local", "slurm"), default="local",
                        help="local: on this machine (default); slurm: each run a job of a SLURM cluster")
    add_slurm_options(parser)
    args = parser.parse_args(argv)
    args.extra = extra
    check_slurm_options(parser, args)
    unknown = [c for c in args.configs if c not in BENCHMARKS[args.benchmark].configs]
    if unknown:
        parser.error(f"unknown configuration {', '.join(unknown)} for {args.benchmark}; known: "
                     f"{', '.join(BENCHMARKS[args.benchmark].configs)}")
    if args.seeds < 1:
        parser.error(f"--seeds {args.seeds}: needs at least 1")
    args.precisions = precision_overrides(parser, args)
    if args.parallel < 1:
        parser.error(f"--parallel {args.parallel}: needs at least 1")
    if args.preflight_updates < 2:
        parser.error(f"--preflight-updates {args.preflight_updates}: needs at least 2 (a first loss and a last)")
    return Settings.of(args)


def precision_overrides(parser, args) -> Dict[str, str]:
    """{config: precision} of the --precision options (P alone: every configuration of --configs;
    a CONFIG=P after it wins for that CONFIG). PRECISION in the environment is refused: it would
    change the precision of every configuration, and with it every recorded run."""
    if os.environ.get("PRECISION"):
        parser.error(f"PRECISION={os.environ['PRECISION']}: compare.sh takes --precision [CONFIG=]P, naming the "
                     "configurations it applies to (PRECISION is train_*.sh's, for one run)")
    overrides = {}
    for option in args.precision:
        config, _, precision = option.rpartition("=")
        if precision not in PRECISIONS:
            parser.error(f"--precision {option}: {precision!r} is not a precision; allowed: {', '.join(PRECISIONS)}")
        if config and config not in args.configs:
            parser.error(f"--precision {option}: {config} is not among the configurations run "
                         f"({', '.join(args.configs)})")
        overrides.update({name: precision for name in ([config] if config else args.configs)})
    return overrides


def check_direction(args) -> None:
    prepared = prepared_direction(args.prepared)
    if args.direction and args.direction != prepared:
        raise RecipeError(f"--direction {args.direction}: {args.prepared} was prepared for {prepared}; prepare "
                          f"another directory with scripts/prepare_{args.benchmark}_de_en.sh --direction "
                          f"{args.direction}, or leave --direction out")


LAUNCHERS = {"local": compare_locally, "slurm": compare_on_slurm}
PREFLIGHTS = {"local": preflight_here, "slurm": preflight_on_slurm}


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    check_not_half_prepared(args.prepared)
    check_direction(args)
    out = Path(args.out)
    if args.preflight:
        return report(*PREFLIGHTS[args.launcher](args), out)
    runs = [Run(number, config, seed, out / f"{config}-seed{seed}") for number, (seed, config) in enumerate(
        ((seed, config) for seed in range(1, args.seeds + 1) for config in args.configs), 1)]
    LAUNCHERS[args.launcher](runs, args)


if __name__ == "__main__":
    run_main(main, "compare.sh")
