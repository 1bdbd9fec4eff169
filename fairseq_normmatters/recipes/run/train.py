"""Train one configuration of the paper's comparison (WMT14 or IWSLT14 de-en) with fairseq-train.

    scripts/train_wmt14.sh CONFIG PREPARED_DIR SAVE_DIR [extra fairseq-train args...]
    scripts/train_iwslt14.sh CONFIG PREPARED_DIR SAVE_DIR [extra fairseq-train args...]

IWSLT14: fairseq's published settings for transformer_iwslt_de_en (examples/translation):
one GPU, --max-tokens 4096, Adam (0.9, 0.98), lr 5e-4, inverse-sqrt with 4000 warm-up
updates, dropout 0.3, weight decay 1e-4, label smoothing 0.1, decoder input and output
embeddings shared; 50 epochs (fairseq's example leaves the length to the user). LSTMs as
below. The rest of this text is WMT14's.

Paper-like settings (Vaswani et al. base; the authors' seq2seq recipe): Adam (0.9, 0.98),
inverse-sqrt learning rate with 4000 warm-up updates, label smoothing 0.1, all embeddings
shared, dropout 0.1, --max-tokens 4096 per GPU with --update-freq so that the effective batch
is 8 GPUs x 4096 tokens, one precision for every configuration on CUDA (bf16 autocast where the
GPU has bf16, else amp; PRECISION=fp16, amp, bf16 or fp32 to change; bf16 is the plugin's
--autocast-bf16, since fairseq's --bf16 implies --tpu and crashes; on CPU float32 unless
PRECISION=bf16), all visible GPUs (GPUS=N: the first N; IWSLT14: one unless GPUS says more), the
batch the same on any GPU count (batch_flags), json logs in
SAVE_DIR/train.log, a checkpoint and a validation every 1000 updates (the last 5 kept, for
averaging the converged tail: the last 4000 updates and the final state). LSTMs: the same
optimizer with lr 0.001, dropout 0.2 and --clip-norm 1.0. Extra arguments are passed last, so
they override any of these.
"""

import os
import sys

from ..common import PROGRAM_VARIABLE, RecipeError, run_main
from . import lock as run_lock
from .batch import batch_text, effective_batch, whole
from .command import cpu_not_chosen, gpus_per_run, run_command, start_run, visible_devices, visible_gpus
from .configs import BENCHMARKS


def main(argv=None):
    """[--benchmark wmt14|iwslt14] CONFIG PREPARED_DIR SAVE_DIR [extra...]: SAVE_DIR's lock taken,
    run.json written, then fairseq-train in this process (exec'd as one_run's training alone:
    it keeps the lock and stops on a signal at the end of an update, its state saved)."""
    argv = sys.argv[1:] if argv is None else argv
    benchmark = "wmt14"
    if argv[:1] == ["--benchmark"] and len(argv) > 1:
        benchmark, argv = argv[1], argv[2:]
        if benchmark not in BENCHMARKS:
            raise RecipeError(f"unknown benchmark {benchmark!r}; known: {', '.join(BENCHMARKS)}")
    if len(argv) < 3 or argv[0] in ("-h", "--help"):
        print(__doc__)
        print("CONFIG is one of: " + ", ".join(BENCHMARKS[benchmark].configs))
        sys.exit(0 if argv and argv[0] in ("-h", "--help") else 2)
    config, prepared, save_dir, extra = argv[0], argv[1], argv[2], argv[3:]
    asked = whole(os.environ.get("GPUS", "0"))
    if asked is None or asked < 0:
        raise RecipeError(f"GPUS={os.environ['GPUS']!r}: needs a number of GPUs (0 or unset: the benchmark's default)")
    gpus = gpus_per_run(benchmark, visible_gpus(), asked)
    if gpus:
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(visible_devices()[:gpus])
    program = f"train_{benchmark}.sh"
    precision = os.environ.get("PRECISION") or None
    run_command(config, prepared, save_dir, extra, gpus, benchmark, precision)  # refused before anything is written
    lock = run_lock.take(save_dir)  # before run.json: one writer per run folder
    cmd = start_run(config, prepared, save_dir, extra, gpus, benchmark, precision)
    if cpu_not_chosen(gpus, extra):
        print("[train] no GPU here and none expected (torch without CUDA): training on the CPU (--cpu)")
    print(f"[train] batch: {batch_text(effective_batch(cmd, gpus))}")
    print("[train] " + " ".join(cmd), flush=True)
    os.set_inheritable(lock.fileno(), True)
    os.environ.update({**run_lock.handed_on(lock), PROGRAM_VARIABLE: program})
    os.execv(sys.executable, [sys.executable, "-m", "fairseq_normmatters.recipes.run.one_run", "--", *cmd])


if __name__ == "__main__":
    run_main(main, "train_wmt14.sh")
