#!/usr/bin/env python3
"""prepare_wmt14_de_en.sh's time and peak memory on a synthetic corpus of N pairs of WMT14's size.

    python scripts/bench/bench_prepare.py --pairs 1000000 [--workers 2] [--work /tmp/bench_prepare] [--keep]

Writes a plain corpus (train/valid/test.{de,en}) of N training pairs whose lines have WMT14's
length (about 20 words a side with a long tail, about 120 bytes a line: 1M pairs are about
240 MB of text) over a Zipf-distributed vocabulary of 60k made-up words, with
quotes, dashes and brackets for the punctuation normalization to change; then runs the prepare
script on it (--vocab-size 32000) and prints the wall time and the peak memory: of the whole
process tree (the sum of its processes' proportional set sizes, sampled every 0.5 s) and the
largest resident set of one of its processes. The corpus is made once per N and reused; --keep keeps the prepared output.
"""

import argparse
import itertools
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent
VOCABULARY = 60_000
PUNCTUATION = ["„{}“", "“{}”", "({})", "{} –", "{} :", "«{}»", "{} ..."]  # what Moses' normalization rewrites


def made_up_words(rng: random.Random, count: int):
    letters = "abcdefghijklmnopqrstuvwxyzäöüß"
    return ["".join(rng.choice(letters) for _ in range(rng.randint(2, 8))) for _ in range(count)]


def sentence(rng, words, weights, length: int) -> str:
    line = " ".join(rng.choices(words, cum_weights=weights, k=length))
    return rng.choice(PUNCTUATION).format(line) if rng.random() < 0.2 else line + " ."


def write_corpus(directory: Path, pairs: int, seed: int = 1) -> None:
    """train (N pairs), valid and test (3000 each) .de/.en of made-up German and English."""
    rng = random.Random(seed)
    words = {lang: made_up_words(rng, VOCABULARY) for lang in ("de", "en")}
    weights = list(itertools.accumulate(1 / rank for rank in range(1, VOCABULARY + 1)))
    directory.mkdir(parents=True, exist_ok=True)
    for split, count in (("train", pairs), ("valid", 3000), ("test", 3000)):
        with open(directory / f"{split}.de", "w") as de, open(directory / f"{split}.en", "w") as en:
            for _ in range(count):
                length = max(1, min(300, int(rng.lognormvariate(2.85, 0.55))))
                de.write(sentence(rng, words["de"], weights, length) + "\n")
                en.write(sentence(rng, words["en"], weights, max(1, int(length * rng.uniform(0.85, 1.25)))) + "\n")


def tree_memory(root: int) -> tuple:
    """(sum of proportional set sizes, largest resident set), in bytes, of process `root` and
    all its descendants (the processes started after it: a process id is not reused until the
    ids wrap around). The proportional set counts a page shared by k processes (a forked
    worker's) 1/k in each, so the sum is the memory the tree holds."""
    children = {root: []}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) > root:
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    parent = int(stat.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(parent, []).append(int(entry))
            except (OSError, ValueError, IndexError):
                continue
    proportional, resident, todo = 0, 0, [root]
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        try:
            with open(f"/proc/{pid}/smaps_rollup") as rollup:
                fields = dict(line.split(":", 1) for line in rollup if line[0].isupper())
        except (OSError, ValueError):
            continue
        proportional += int(fields["Pss"].split()[0]) * 1024
        resident = max(resident, int(fields["Rss"].split()[0]) * 1024)
    return proportional, resident


def run_measured(command) -> dict:
    """Run `command`; its wall time and the peaks of tree_memory, sampled every 0.5 s."""
    started = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peaks, output = [0, 0], []
    reader = threading.Thread(target=lambda: output.extend(process.stdout), daemon=True)
    reader.start()
    while process.poll() is None:
        total, largest = tree_memory(process.pid)
        peaks = [max(peaks[0], total), max(peaks[1], largest)]
        time.sleep(0.5)
    reader.join()
    return {"seconds": time.monotonic() - started, "tree_peak": peaks[0], "process_peak": peaks[1],
            "status": process.returncode, "output": "".join(output)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, required=True, help="training pairs of the synthetic corpus")
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)), help="prepare's --workers")
    parser.add_argument("--work", default="/tmp/bench_prepare", help="where the corpus and the output go")
    parser.add_argument("--keep", action="store_true", help="keep the prepared output")
    args = parser.parse_args()
    corpus, out = Path(args.work) / f"corpus-{args.pairs}", Path(args.work) / f"prepared-{args.pairs}"
    if not (corpus / "test.en").is_file():
        print(f"[bench_prepare] writing {args.pairs} synthetic pairs into {corpus}", flush=True)
        write_corpus(corpus, args.pairs)
    shutil.rmtree(out, ignore_errors=True)  # the benchmark's own output of an earlier call
    megabytes = sum((corpus / f"train.{lang}").stat().st_size for lang in ("de", "en")) / 1e6
    result = run_measured([str(SCRIPTS / "prepare_wmt14_de_en.sh"), "--raw-dir", str(corpus), "--vocab-size", "32000",
                           "--workers", str(args.workers), str(out)])
    if result["status"] != 0:
        sys.exit(f"prepare failed ({result['status']}):\n{result['output'][-3000:]}")
    if not args.keep:
        shutil.rmtree(out)
    minutes, seconds = divmod(round(result["seconds"]), 60)
    print(f"[bench_prepare] {args.pairs} pairs ({megabytes:.0f} MB of training text), --workers {args.workers}: "
          f"{minutes} min {seconds:02d} s, peak memory {result['tree_peak'] / 1e9:.2f} GB (all its processes; "
          f"the largest resident set {result['process_peak'] / 1e9:.2f} GB)")


if __name__ == "__main__":
    main()
