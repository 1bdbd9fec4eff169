"""compare.sh --preflight: every configuration of the grid trained for a few hundred updates at
its full size on the user's prepared data, on one GPU (the CPU where there is none), before the
GPU-days of the grid are spent.

    scripts/compare.sh wmt14 PREPARED OUT --preflight [--preflight-updates 300] [--configs ...] [-- args]

Each configuration trains as its runs would (the recipe's command, the arguments after --, the
configuration's precision; seed 1) in OUT/preflight/CONFIG, with a log line every update and no
checkpoint or validation, for --preflight-updates updates. The table (screen and
OUT/preflight/preflight.md) gives for each: the loss of its first update against a uniform guess
(log2 of the vocabulary), the loss at the end, the loss scale at the start and the end (fp16 and
amp), the overflows fairseq reported, its tokens/s and updates/s (medians over the second half),
its peak memory, and the GPU-hours its runs would take at the recipe's budget (its --max-update)
from those updates/s on one GPU (the runs' GPU-hours on several GPUs are about the same). It flags
a configuration that starts more than START_MARGIN_BITS above uniform, whose loss scale falls to
1/COLLAPSE_FACTOR of its start or below, or that diverges; then compare.sh exits 1, naming them.
An earlier OUT/preflight is moved aside, kept whole.

    python -m fairseq_normmatters.recipes.run.preflight RECORD -- FAIRSEQ-TRAIN COMMAND...

trains one configuration (the process compare.sh starts) and writes RECORD: its peak memory,
whether it diverged, and the training split's target tokens (for a budget in epochs).
"""

import json
import math
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import List, NamedTuple, Optional, Tuple

from ..common import RecipeError, run_main, write_text_atomically
from .folder import RunFolder, move_aside
from .runs import Run, holding_out
from .batch import last_value, whole
from .command import visible_gpus

PREFLIGHT_UPDATES = 300
START_MARGIN_BITS = 2.0  # a start this far above a uniform guess is flagged
COLLAPSE_FACTOR = 64  # a loss scale down to 1/64 of its start (128 -> 2) has collapsed
OVERFLOW = re.compile(r"overflow detected", re.I)
PREFLIGHT_FLAGS = ["--log-interval", "1", "--no-save", "--disable-validation"]


class Measured(NamedTuple):
    """A configuration's preflight: losses in bits, loss scales (None without one), rates, memory."""
    config: str
    precision: str
    initial_loss: Optional[float]
    uniform: float
    final_loss: Optional[float]
    loss_scales: tuple
    overflows: int
    tokens_per_second: Optional[float]
    updates_per_second: Optional[float]
    peak_memory_gb: Optional[float]
    budget: int
    gpu_hours: Optional[float]
    diverged: Optional[str]

    def flags(self) -> List[str]:
        """What is wrong with this configuration, in words (empty: nothing)."""
        found = []
        if self.diverged:
            found.append(f"diverged ({self.diverged})")
        if self.initial_loss is not None and self.initial_loss > self.uniform + START_MARGIN_BITS:
            found.append(f"starts {self.initial_loss - self.uniform:.1f} bits above uniform")
        first, last = self.loss_scales or (None, None)
        if first and last is not None and last <= first / COLLAPSE_FACTOR:
            found.append(f"loss scale collapsed ({first:g} -> {last:g})")
        return found


def vocabulary_size(prepared: Path) -> int:
    """Symbols of the prepared joint dictionary, with fairseq's 4 special ones."""
    dictionary = next((Path(prepared) / "bin").glob("dict.*.txt"))
    return 4 + sum(1 for line in dictionary.read_text(encoding="utf-8").splitlines() if line.strip())


def inner_records(save_dir: Path) -> List[dict]:
    """fairseq's per-update training records (train_inner) of SAVE_DIR/train.log."""
    log = RunFolder(save_dir).train_log
    lines = log.read_text(encoding="utf-8").splitlines() if log.is_file() else []
    return [json.loads(line[line.index("{"):]) for line in lines if '"loss"' in line and '"num_updates"' in line]


def second_half_median(records: List[dict], key: str) -> Optional[float]:
    values = [float(r[key]) for r in records[len(records) // 2:] if key in r]
    return statistics.median(values) if values else None


def budget_updates(command: List[str], record: dict, records: List[dict]) -> int:
    """The updates of a run of `command` at its budget: its --max-update, else its --max-epoch
    epochs of the training split's target tokens (RECORD's) at the tokens an update held here (wpb)."""
    max_update = whole(last_value(command, "--max-update", 0)) or 0
    max_epoch, tokens = whole(last_value(command, "--max-epoch", 0)) or 0, second_half_median(records, "wpb")
    if max_update or not (max_epoch and tokens and record.get("train_target_tokens")):
        return max_update
    return round(max_epoch * record["train_target_tokens"] / tokens)


def train_target_tokens(command: List[str]) -> Optional[int]:
    """The target tokens of the training split a fairseq-train command reads (its binarized
    sizes, less an end of sentence a line); None where its data has no such split. The
    languages are the command's, else the data's (train.SRC-TGT.TGT.idx, as fairseq infers them)."""
    from fairseq.data.indexed_dataset import MMapIndexedDataset
    data, source, target = Path(command[1]), last_value(command, "--source-lang"), last_value(command, "--target-lang")
    pattern = f"train.{source}-{target}.{target}.idx" if source and target else "train.*-*.*.idx"
    targets = [path for path in data.glob(pattern) if path.name.split(".")[1].endswith("-" + path.name.split(".")[2])]
    if len(targets) != 1:
        return None
    dataset = MMapIndexedDataset(str(targets[0].with_suffix("")))
    tokens = int(dataset.sizes.sum() - len(dataset.sizes))  # sizes views the index's mmap, which dies with dataset
    del dataset
    return tokens


def measure(config: str, precision: str, records: List[dict], record: dict, vocabulary: int, budget: int,
            output: str) -> Measured:
    """The preflight of one configuration from its train.log's records, its process's output and RECORD."""
    losses = [float(r["loss"]) for r in records]
    tail = losses[-max(1, len(losses) // 10):]
    scales = [float(r["loss_scale"]) for r in records if "loss_scale" in r]
    ups = second_half_median(records, "ups")
    return Measured(config, precision, losses[0] if losses else None, math.log2(vocabulary),
                    statistics.mean(tail) if tail else None, (scales[0], scales[-1]) if scales else (),
                    len(OVERFLOW.findall(output)), second_half_median(records, "wps"), ups,
                    record.get("peak_memory_gb"), budget, budget / ups / 3600 if ups and budget else None,
                    record.get("diverged"))


def table(measured: List[Measured], seeds: int) -> str:
    """The preflight's Markdown table and the projected GPU-hours of the grid."""
    def number(value, digits=2):
        return "—" if value is None else f"{value:.{digits}f}"
    rows = ["| config | precision | first loss (bits) | uniform | last loss | loss scale | overflows | tokens/s | "
            "updates/s | peak memory (GB) | hours a run at budget (one device) | flags |", "|" + "---|" * 12]
    for m in measured:
        scale = " -> ".join(f"{s:g}" for s in m.loss_scales) or "—"
        rows.append(f"| {m.config} | {m.precision} | {number(m.initial_loss)} | {m.uniform:.2f} | "
                    f"{number(m.final_loss)} | {scale} | {m.overflows} | {number(m.tokens_per_second, 0)} | "
                    f"{number(m.updates_per_second, 3)} | {number(m.peak_memory_gb)} | {number(m.gpu_hours, 1)} "
                    f"(of {m.budget} updates) | {'; '.join(m.flags()) or 'ok'} |")
    hours = [m.gpu_hours for m in measured]
    total = f"{seeds * sum(hours):.1f}" if None not in hours else "unknown (a configuration has no rate)"
    return "\n".join(rows) + (f"\n\nProjected for the grid ({len(measured)} configurations x {seeds} seeds at their "
                              f"budgets): {total} hours of training on devices like this one (GPU-hours on a GPU), "
                              "from each configuration's updates/s here at the command's batch.\n")


def preflight_here(args) -> Tuple[str, List[str]]:
    """Train every configuration of args.configs for args.preflight_updates updates on this
    machine (one GPU, or the CPU); returns the table and the flagged configurations."""
    out = Path(args.out)
    with holding_out(out, wait=False):
        folder = out / "preflight"
        if folder.exists():
            print(f"[preflight] moved the earlier preflight aside to {move_aside(folder)}", flush=True)
        gpus, vocabulary = min(1, visible_gpus()), vocabulary_size(args.prepared)
        measured = []
        for number, config in enumerate(args.configs, 1):
            run = Run(number, config, 1, folder / config)
            print(f"[preflight] {number}/{len(args.configs)} {config}: {args.preflight_updates} updates", flush=True)
            measured.append(train_one(run, args, gpus, vocabulary))
        text = table(measured, args.seeds)
        write_text_atomically(folder / "preflight.md", text)
    return text, [f"{m.config} ({'; '.join(m.flags())})" for m in measured if m.flags()]


def report(text: str, flagged: List[str], out: Path) -> None:
    """The preflight's table on the screen; RecipeError naming the flagged configurations."""
    print(text, flush=True)
    where = Path(out) / "preflight" / "preflight.md"
    if flagged:
        raise RecipeError(f"preflight flagged {len(flagged)} configuration(s): {', '.join(flagged)}; fix them before "
                          f"launching the grid ({where})")
    print(f"[preflight] every configuration starts near a uniform guess and trains: {where}", flush=True)


def train_one(run: Run, args, gpus: int, vocabulary: int) -> Measured:
    """One configuration's preflight training (this module's main in a process of its own)."""
    from .command import precision_of, run_command
    run.save_dir.mkdir(parents=True)
    recipe = run.command(args, gpus, build=run_command)
    command = [*recipe, "--max-update", str(args.preflight_updates), *PREFLIGHT_FLAGS]
    started = time.monotonic()
    record, output = train_recorded(command, run.save_dir, run.config)
    print(f"[preflight] {run.config}: {time.monotonic() - started:.0f} s", flush=True)
    precision = precision_of(run.config, args.benchmark, gpus, args.precisions.get(run.config))
    records = inner_records(run.save_dir)
    return measure(run.config, precision, records, record, vocabulary, budget_updates(recipe, record, records), output)


def train_recorded(command: List[str], folder: Path, name: str) -> Tuple[dict, str]:
    """(RECORD, stdout) of the fairseq-train `command` run by this module's main in a process of
    its own (its output kept in FOLDER/preflight.log); RecipeError with the log's end if it fails.
    Also the runner of scripts/bench/bench_models.py --device cuda."""
    record_path = folder / "preflight.json"
    result = subprocess.run([sys.executable, "-m", "fairseq_normmatters.recipes.run.preflight", str(record_path), "--",
                             *command], capture_output=True, text=True)
    (folder / "preflight.log").write_text(result.stdout + result.stderr, encoding="utf-8")
    if result.returncode != 0:
        raise RecipeError(f"the preflight of {name} exited with {result.returncode}; the last lines of "
                          f"{folder / 'preflight.log'}:\n" + "\n".join(result.stderr.splitlines()[-15:]))
    return json.loads(record_path.read_text()), result.stdout


def peak_memory_gb() -> float:
    """This process's peak memory: CUDA's allocated peak where it trained on a GPU, else its
    resident set's."""
    import resource
    import torch
    if torch.cuda.is_available() and torch.cuda.max_memory_allocated() > 0:
        return torch.cuda.max_memory_allocated() / 2 ** 30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # KiB on Linux


def main(argv=None) -> None:
    """RECORD -- fairseq-train command: train, then write RECORD (peak memory, divergence)."""
    argv = sys.argv[1:] if argv is None else argv
    record, command = Path(argv[0]), argv[argv.index("--") + 1:]
    from .one_run import divergence_reason, train
    diverged = None
    try:
        train(command)
    except Exception as error:
        diverged = divergence_reason(error)
        if diverged is None:
            raise
    record.write_text(json.dumps({"peak_memory_gb": round(peak_memory_gb(), 3), "diverged": diverged,
                                  "train_target_tokens": train_target_tokens(command)}))


if __name__ == "__main__":
    run_main(main, "compare.sh --preflight")
