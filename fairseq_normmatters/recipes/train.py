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
is 8 GPUs x 4096 tokens, fp16 on CUDA (PRECISION=amp, bf16 or fp32 to change; bf16 is the
plugin's --autocast-bf16, since fairseq's --bf16 implies --tpu and crashes; on CPU only bf16
applies), all visible GPUs, json logs in
SAVE_DIR/train.log, a checkpoint and a validation every 1000 updates (the last 5 kept, for
averaging the converged tail: the last 4000 updates and the final state). LSTMs: the same
optimizer with lr 0.001, dropout 0.2 and --clip-norm 1.0. Extra arguments are passed last, so
they override any of these.
"""

import json
import os
import sys
from pathlib import Path

from . import (DIRECTIONS, RecipeError, check_not_half_prepared, prepared_direction, run_main, tool_path,
               write_text_atomically)

# a checkpoint and a validation every 1000 updates (the last 5 kept: the final 4000 updates and
# the final state, as Vaswani et al. averaged checkpoints written minutes apart), no epoch ones
TAIL_CHECKPOINTS = ["--save-interval-updates", "1000", "--keep-interval-updates", "5", "--no-epoch-checkpoints",
                    "--validate-interval-updates", "1000"]
TRANSFORMER = ["--lr", "0.0007", "--dropout", "0.1"]
LSTM = ["--lr", "0.001", "--dropout", "0.2", "--clip-norm", "1.0"]
CONFIGS = {  # name -> (architecture, flags)
    "transformer_l2": ("norm_transformer_wmt_en_de", TRANSFORMER),
    "transformer_l1": ("norm_transformer_l1_wmt_en_de", TRANSFORMER),
    "transformer_linf": ("norm_transformer_linf_wmt_en_de", TRANSFORMER),
    "transformer_topk": ("norm_transformer_topk_wmt_en_de", TRANSFORMER),
    "transformer_bwn": ("norm_transformer_bwn_wmt_en_de", TRANSFORMER),
    "transformer_none": ("norm_transformer_wmt_en_de", TRANSFORMER + ["--norm-type", "none"]),  # BWN's baseline
    "transformer_l1_c1": ("norm_transformer_l1_c1_wmt_en_de", TRANSFORMER),
    "lstm_nonorm": ("norm_lstm_wmt_en_de", LSTM),
    "lstm_bwn": ("norm_lstm_bwn_wmt_en_de", LSTM),
}
COMMON = ["--task", "translation", "--share-all-embeddings", "--optimizer", "adam",
          "--adam-betas", "(0.9, 0.98)", "--adam-eps", "1e-9", "--lr-scheduler", "inverse_sqrt",
          "--warmup-updates", "4000", "--warmup-init-lr", "1e-07", "--criterion",
          "label_smoothed_cross_entropy", "--label-smoothing", "0.1", "--weight-decay", "0.0",
          "--max-tokens", "4096", "--max-update", "100000", *TAIL_CHECKPOINTS,
          "--log-format", "json", "--log-interval", "100", "--seed", "1"]
REFERENCE_GPUS = 8
IWSLT14_TRANSFORMER = ["--lr", "5e-4", "--dropout", "0.3", "--weight-decay", "0.0001"]
IWSLT14_CONFIGS = {  # name -> (architecture, flags)
    "transformer_l2": ("norm_transformer_iwslt_de_en", IWSLT14_TRANSFORMER),
    "transformer_l1": ("norm_transformer_l1_iwslt_de_en", IWSLT14_TRANSFORMER),
    "transformer_linf": ("norm_transformer_linf_iwslt_de_en", IWSLT14_TRANSFORMER),
    "transformer_bwn": ("norm_transformer_bwn_iwslt_de_en", IWSLT14_TRANSFORMER),
    "transformer_none": ("norm_transformer_iwslt_de_en", IWSLT14_TRANSFORMER + ["--norm-type", "none"]),
    "transformer_l1_c1": ("norm_transformer_l1_iwslt_de_en", IWSLT14_TRANSFORMER + ["--norm-constant", "1.0"]),
    "lstm_nonorm": ("norm_lstm_iwslt_de_en", LSTM),
    "lstm_bwn": ("norm_lstm_bwn_iwslt_de_en", LSTM),
}
IWSLT14_COMMON = ["--task", "translation", "--share-decoder-input-output-embed", "--optimizer", "adam",
                  "--adam-betas", "(0.9, 0.98)", "--clip-norm", "0.0", "--lr-scheduler", "inverse_sqrt",
                  "--warmup-updates", "4000", "--criterion", "label_smoothed_cross_entropy",
                  "--label-smoothing", "0.1", "--max-tokens", "4096", "--max-epoch", "50",
                  "--keep-last-epochs", "10", "--log-format", "json", "--log-interval", "100", "--seed", "1"]
# benchmark -> (configs, common flags, GPUs of the reference batch)
BENCHMARKS = {"wmt14": (CONFIGS, COMMON, REFERENCE_GPUS), "iwslt14": (IWSLT14_CONFIGS, IWSLT14_COMMON, 1)}
# PRECISION -> fairseq-train flags; bf16 is the plugin's autocast (fairseq's --bf16 implies --tpu)
PRECISIONS = {"fp16": ["--fp16"], "amp": ["--amp"], "bf16": ["--autocast-bf16"], "fp32": []}
CUDA_ONLY_PRECISIONS = ("fp16", "amp")  # fairseq's; on CPU they fall back to float32


def device_flags(gpus: int, precision: str, reference_gpus: int = REFERENCE_GPUS):
    """--cpu, or --update-freq for `reference_gpus` x 4096 tokens per update over `gpus` GPUs,
    plus the PRECISION's flags (those that need CUDA only on GPUs)."""
    if precision not in PRECISIONS:
        raise RecipeError(f"PRECISION={precision!r} is not supported; allowed: {', '.join(PRECISIONS)} "
                          "(bf16 is the plugin's --autocast-bf16: fairseq's --bf16 implies --tpu and crashes)")
    if gpus == 0:
        cpu = ["--cpu", "--update-freq", str(reference_gpus)]
        return cpu + ([] if precision in CUDA_ONLY_PRECISIONS else PRECISIONS[precision])
    return ["--update-freq", str(max(1, reference_gpus // gpus))] + PRECISIONS[precision]


def command(config, prepared, save_dir, extra, gpus, precision="fp16", benchmark="wmt14"):
    """The fairseq-train command line of CONFIG of `benchmark` (a list)."""
    configs, common, reference_gpus = BENCHMARKS[benchmark]
    if config not in configs:
        raise RecipeError(f"unknown CONFIG {config!r}; known: {', '.join(configs)}")
    check_not_half_prepared(prepared)
    data = Path(prepared) / "bin"
    if not any(data.glob("dict.*.txt")):
        raise RecipeError(f"{data} holds no fairseq data (dict.*.txt): run scripts/prepare_{benchmark}_de_en.sh first")
    arch, flags = configs[config]
    source, target = DIRECTIONS[prepared_direction(prepared)]
    user_dir = str(Path(__file__).resolve().parent.parent)
    return [tool_path("fairseq-train"), str(data.resolve()), "--user-dir", user_dir, "--arch", arch,
            "--save-dir", str(save_dir), "--log-file", str(Path(save_dir) / "train.log"),
            "--source-lang", source, "--target-lang", target,
            *common, *flags, *device_flags(gpus, precision, reference_gpus), *extra]


#: the flags of a fairseq-train command that name where the run is, not what it trains
WHERE_FLAGS = ("--user-dir", "--save-dir", "--log-file")


def training_arguments(command):
    """A fairseq-train command without the program's path and the values of WHERE_FLAGS: what
    two runs must share to be the same training."""
    kept, skip = [], False
    for argument in command[1:]:
        if not skip:
            kept.append(argument)
        skip = argument in WHERE_FLAGS
    return kept


def visible_gpus() -> int:
    import torch
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def main(argv=None):
    """[--benchmark wmt14|iwslt14] CONFIG PREPARED_DIR SAVE_DIR [extra...]: exec fairseq-train."""
    argv = sys.argv[1:] if argv is None else argv
    benchmark = "wmt14"
    if argv[:1] == ["--benchmark"] and len(argv) > 1:
        benchmark, argv = argv[1], argv[2:]
        if benchmark not in BENCHMARKS:
            raise RecipeError(f"unknown benchmark {benchmark!r}; known: {', '.join(BENCHMARKS)}")
    if len(argv) < 3 or argv[0] in ("-h", "--help"):
        print(__doc__)
        print("CONFIG is one of: " + ", ".join(BENCHMARKS[benchmark][0]))
        sys.exit(0 if argv and argv[0] in ("-h", "--help") else 2)
    config, prepared, save_dir, extra = argv[0], argv[1], argv[2], argv[3:]
    cmd = start_run(config, prepared, save_dir, extra, visible_gpus(), benchmark)
    print("[train] " + " ".join(cmd), flush=True)
    os.execv(cmd[0], cmd)


def run_command(config, prepared, save_dir, extra, gpus, benchmark="wmt14"):
    """The fairseq-train command of CONFIG (command(), with $PRECISION) for `gpus` GPUs."""
    return command(config, prepared, save_dir, extra, gpus, os.environ.get("PRECISION", "fp16"), benchmark)


def recorded_command(save_dir):
    """The fairseq-train command SAVE_DIR/run.json recorded, or None."""
    path = Path(save_dir) / "run.json"
    return json.loads(path.read_text()).get("command") if path.is_file() else None


def start_run(config, prepared, save_dir, extra, gpus, benchmark="wmt14"):
    """run_command(...), after SAVE_DIR/run.json records it (evaluate and collect read the
    configuration and seed there, compare the command)."""
    cmd = run_command(config, prepared, save_dir, extra, gpus, benchmark)
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    write_text_atomically(Path(save_dir) / "run.json",
                          json.dumps({"config": config, "benchmark": benchmark, "command": cmd}, indent=1))
    return cmd


if __name__ == "__main__":
    run_main(main, "train_wmt14.sh")
