"""Drive the real fairseq command-line tools on tiny data made on the fly."""

import os
import re
import subprocess
import sys
from pathlib import Path

import fairseq_normmatters
from fairseq_normmatters.recipes.common import call_fairseq
from toy_data import write_parallel_text  # noqa: F401  (re-exported; scripts/bench/toy_data.py)

BIN = Path(sys.executable).parent
USER_DIR = str(Path(fairseq_normmatters.__file__).parent)

TINY_TRANSFORMER = ["--encoder-layers", "2", "--decoder-layers", "2",
                    "--encoder-embed-dim", "32", "--decoder-embed-dim", "32",
                    "--encoder-ffn-embed-dim", "64", "--decoder-ffn-embed-dim", "64",
                    "--encoder-attention-heads", "2", "--decoder-attention-heads", "2",
                    "--share-all-embeddings", "--dropout", "0"]
TINY_LSTM = ["--encoder-embed-dim", "32", "--encoder-hidden-size", "32",
             "--decoder-embed-dim", "32", "--decoder-hidden-size", "32",
             "--decoder-out-embed-dim", "32", "--dropout", "0"]
TRAINING = ["--optimizer", "adam", "--lr", "0.005", "--lr-scheduler", "inverse_sqrt",
            "--warmup-updates", "10", "--max-tokens", "1000", "--criterion",
            "label_smoothed_cross_entropy", "--label-smoothing", "0.1", "--cpu", "--seed", "1",
            "--no-epoch-checkpoints", "--log-format", "simple", "--num-workers", "0"]


#: For the fairseq processes that tests start themselves (the gloo ranks): one thread (tiny
#: models; pytest-xdist runs two at once) and the default norm backend (native on CPU, built
#: once into the shared cache) unless asked otherwise.
SUBPROCESS_ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def run(tool, *args, check=True, input=None):
    """fairseq's console script `tool` (fairseq-preprocess, -train, -generate, -validate,
    -interactive) through its entry point (cli_main) in this process, as a new process runs it
    (recipes.call_fairseq): the same arguments, output, exit status and error message, without
    importing fairseq anew (seconds per call).
    Returns a CompletedProcess; `check` raises AssertionError on a non-zero exit status."""
    status, stdout, stderr = call_fairseq(tool, *args, stdin=input or "")
    if check and status != 0:
        raise AssertionError(f"{tool} exited {status}:\n{stderr[-4000:]}")
    return subprocess.CompletedProcess([str(BIN / tool), *map(str, args)], status, stdout, stderr)


def output(tool, *args) -> str:
    """What fairseq's console script `tool` printed and logged (run)."""
    result = run(tool, *args)
    return result.stdout + result.stderr


def preprocess(raw, dest):
    run("fairseq-preprocess", "--source-lang", "de", "--target-lang", "en",
        "--trainpref", Path(raw) / "train", "--validpref", Path(raw) / "valid",
        "--testpref", Path(raw) / "test", "--destdir", dest, "--joined-dictionary",
        "--workers", "1")
    return Path(dest)


def train(data, save_dir, arch, *extra, updates=40, check=True):
    """fairseq-train with --user-dir in this process (run; fairseq logs on stdout)."""
    return run("fairseq-train", data, "--user-dir", USER_DIR, "--arch", arch, "--save-dir", save_dir,
               "--max-update", updates, *TRAINING, *extra, check=check)


def epoch_losses(log: str, subset="train"):
    """The per-epoch losses of a `--log-format simple` log."""
    return [float(x) for x in re.findall(rf"\| {subset} \| epoch \d+ \|.*? loss ([\d.]+)", log)]


def losses_per_update(log: str):
    """The per-update training losses of a `--log-format simple --log-interval 1` log."""
    return [float(x) for x in re.findall(r"\| train_inner \|[^\n]*? loss=([\d.]+)", log)]
