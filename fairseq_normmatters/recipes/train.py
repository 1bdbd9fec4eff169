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

import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import List, NamedTuple

from ..accumulation import ACCUMULATE_FORMATS, FLOAT32
from .identity import result_identity, software_versions, version_changes
from . import (DIRECTIONS, PROGRAM_VARIABLE, RecipeError, check_not_half_prepared, prepared_direction, run_lock,
               run_main, tool_path, write_text_atomically)

# a checkpoint and a validation every 1000 updates (the last 5 kept: the final 4000 updates and
# the final state, as Vaswani et al. averaged checkpoints written minutes apart), no epoch ones
TAIL_CHECKPOINTS = ["--save-interval-updates", "1000", "--keep-interval-updates", "5", "--no-epoch-checkpoints",
                    "--validate-interval-updates", "1000"]
TRANSFORMER = ["--lr", "0.0007", "--dropout", "0.1"]
LSTM = ["--lr", "0.001", "--dropout", "0.2", "--clip-norm", "1.0"]


class Config(NamedTuple):
    """A configuration of the comparison: its architecture, its flags after the recipe's, and
    the PRECISION it trains in on GPUs by default: AUTO, one setting for every row compared
    (auto_precision), so that the rows differ in their norms only, not in their arithmetic."""
    arch: str
    flags: List[str]
    precision: str = "auto"


CONFIGS = {
    "transformer_l2": Config("norm_transformer_wmt_en_de", TRANSFORMER),
    "transformer_l1": Config("norm_transformer_l1_wmt_en_de", TRANSFORMER),
    "transformer_linf": Config("norm_transformer_linf_wmt_en_de", TRANSFORMER),
    "transformer_topk": Config("norm_transformer_topk_wmt_en_de", TRANSFORMER),
    "transformer_bwn": Config("norm_transformer_bwn_wmt_en_de", TRANSFORMER),
    "transformer_none": Config("norm_transformer_wmt_en_de", TRANSFORMER + ["--norm-type", "none"]),  # BWN's baseline
    "transformer_l1_c1": Config("norm_transformer_l1_c1_wmt_en_de", TRANSFORMER),
    "lstm_nonorm": Config("norm_lstm_wmt_en_de", LSTM),
    "lstm_bwn": Config("norm_lstm_bwn_wmt_en_de", LSTM),
}
COMMON = ["--task", "translation", "--share-all-embeddings", "--optimizer", "adam",
          "--adam-betas", "(0.9, 0.98)", "--adam-eps", "1e-9", "--lr-scheduler", "inverse_sqrt",
          "--warmup-updates", "4000", "--warmup-init-lr", "1e-07", "--criterion",
          "label_smoothed_cross_entropy", "--label-smoothing", "0.1", "--weight-decay", "0.0",
          "--max-update", "100000", *TAIL_CHECKPOINTS,
          "--log-format", "json", "--log-interval", "100", "--seed", "1"]
REFERENCE_GPUS = 8
IWSLT14_TRANSFORMER = ["--lr", "5e-4", "--dropout", "0.3", "--weight-decay", "0.0001"]
IWSLT14_CONFIGS = {
    "transformer_l2": Config("norm_transformer_iwslt_de_en", IWSLT14_TRANSFORMER),
    "transformer_l1": Config("norm_transformer_l1_iwslt_de_en", IWSLT14_TRANSFORMER),
    "transformer_linf": Config("norm_transformer_linf_iwslt_de_en", IWSLT14_TRANSFORMER),
    "transformer_bwn": Config("norm_transformer_bwn_iwslt_de_en", IWSLT14_TRANSFORMER),
    "transformer_none": Config("norm_transformer_iwslt_de_en", IWSLT14_TRANSFORMER + ["--norm-type", "none"]),
    "transformer_l1_c1": Config("norm_transformer_l1_iwslt_de_en", IWSLT14_TRANSFORMER + ["--norm-constant", "1.0"]),
    "lstm_nonorm": Config("norm_lstm_iwslt_de_en", LSTM),
    "lstm_bwn": Config("norm_lstm_bwn_iwslt_de_en", LSTM),
}
IWSLT14_COMMON = ["--task", "translation", "--share-decoder-input-output-embed", "--optimizer", "adam",
                  "--adam-betas", "(0.9, 0.98)", "--clip-norm", "0.0", "--lr-scheduler", "inverse_sqrt",
                  "--warmup-updates", "4000", "--criterion", "label_smoothed_cross_entropy",
                  "--label-smoothing", "0.1", "--max-epoch", "50",
                  "--keep-last-epochs", "10", "--log-format", "json", "--log-interval", "100", "--seed", "1"]
#: the kinds whose norms the comparison also runs accumulating in a narrow format
NARROW_ACCUMULATION_KINDS = ("l2", "l1", "linf")
ACCUMULATION_SUFFIX = "_acc_"  # transformer_l1_acc_bf16: transformer_l1 with --norm-accumulate bf16


def with_narrow_accumulation(configs: dict) -> dict:
    """configs and, for each Transformer of NARROW_ACCUMULATION_KINDS, the same model with its
    norms accumulating in fp16 (for GPUs) and in bf16 (for CPUs): transformer_KIND_acc_FORMAT."""
    narrow = {f"transformer_{kind}{ACCUMULATION_SUFFIX}{accumulate}":
              configs[f"transformer_{kind}"]._replace(flags=configs[f"transformer_{kind}"].flags
                                                      + ["--norm-accumulate", accumulate])
              for kind in NARROW_ACCUMULATION_KINDS for accumulate in ACCUMULATE_FORMATS if accumulate != FLOAT32}
    return {**configs, **narrow}


CONFIGS, IWSLT14_CONFIGS = with_narrow_accumulation(CONFIGS), with_narrow_accumulation(IWSLT14_CONFIGS)
# benchmark -> (configs, common flags, GPUs of the reference batch)
BENCHMARKS = {"wmt14": (CONFIGS, COMMON, REFERENCE_GPUS), "iwslt14": (IWSLT14_CONFIGS, IWSLT14_COMMON, 1)}
# PRECISION -> fairseq-train flags; bf16 is the plugin's autocast (fairseq's --bf16 implies --tpu)
PRECISIONS = {"fp16": ["--fp16"], "amp": ["--amp"], "bf16": ["--autocast-bf16"], "fp32": []}
CUDA_ONLY_PRECISIONS = ("fp16", "amp")  # fairseq's; on CPU they fall back to float32
AUTO = "auto"  # every configuration's default: auto_precision()


TOKENS_PER_GPU = 4096  # --max-tokens of one GPU of the reference batch (the paper's, fairseq's examples')
MIN_TOKENS_PER_GPU = 1024  # below this a GPU's batch no longer holds WMT14's longest pairs (250 words)


def batch_flags(world_size: int, reference_gpus: int):
    """--max-tokens and --update-freq for `world_size` GPUs over all nodes (1 on CPU) so that
    world_size x max_tokens x update_freq is the reference batch, reference_gpus x 4096 tokens:
    the smallest update_freq whose per-GPU share fits in 4096 tokens, that share rounded to a
    whole token where the count does not divide (3 GPUs: 3 x 3641 x 3 = 32769 for 32768).
    Refused where a GPU's share would fall below MIN_TOKENS_PER_GPU."""
    reference = reference_gpus * TOKENS_PER_GPU
    update_freq = max(1, -(-reference // (world_size * TOKENS_PER_GPU)))
    max_tokens = round(reference / (world_size * update_freq))
    if max_tokens < MIN_TOKENS_PER_GPU:
        raise RecipeError(f"{world_size} GPUs would share the reference batch of {reference} tokens "
                          f"({reference_gpus} x {TOKENS_PER_GPU}) at {max_tokens} tokens each, under the "
                          f"{MIN_TOKENS_PER_GPU} that a GPU needs; train each run on at most "
                          f"{reference // MIN_TOKENS_PER_GPU} GPUs, or pass --max-tokens and --update-freq "
                          "after the other arguments for a batch of your own")
    return ["--max-tokens", str(max_tokens), "--update-freq", str(update_freq)]


def device_flags(gpus: int, precision: str, reference_gpus: int = REFERENCE_GPUS, world_size: int = 0):
    """--cpu or not, the batch (batch_flags for `world_size` GPUs over all nodes, default `gpus`)
    and the PRECISION's flags (those that need CUDA only on GPUs)."""
    if precision not in PRECISIONS:
        raise RecipeError(f"PRECISION={precision!r} is not supported; allowed: {', '.join(PRECISIONS)} "
                          "(bf16 is the plugin's --autocast-bf16: fairseq's --bf16 implies --tpu and crashes)")
    if gpus == 0:
        cpu = ["--cpu", *batch_flags(1, reference_gpus)]
        return cpu + ([] if precision in CUDA_ONLY_PRECISIONS else PRECISIONS[precision])
    return [*batch_flags(world_size or gpus, reference_gpus), *PRECISIONS[precision]]


def last_value(command, flag: str, default=None):
    """The value of the last `flag` of a command line, else `default`."""
    values = [command[i + 1] for i, argument in enumerate(command[:-1]) if argument == flag]
    return values[-1] if values else default


def effective_batch(command, gpus: int) -> dict:
    """{"gpus", "ranks", "max_tokens", "update_freq", "tokens"} of a fairseq-train command run on
    `gpus` GPUs here (its --distributed-world-size where it names one; on CPU "gpus" is 0 and
    the ranks are one_run's CPU processes): the batch an update sees at most."""
    cpu = "--cpu" in command
    world = whole(last_value(command, "--distributed-world-size", 1 if cpu else gpus or 1))
    max_tokens, update_freq = whole(last_value(command, "--max-tokens")), whole(last_value(command, "--update-freq", 1))
    known = None not in (world, max_tokens, update_freq)
    return {"gpus": 0 if cpu else world, "ranks": world, "max_tokens": max_tokens, "update_freq": update_freq,
            "tokens": world * max_tokens * update_freq if known else None}


def whole(value):
    """int(value), or None for a value fairseq-train will refuse itself (with its own message)."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def batch_text(batch: dict) -> str:
    """'8 GPUs x 4096 tokens x 1 = 32768 tokens an update' (the CPU: 'the CPU x ...', or '2 CPU
    ranks x ...' for a run over several CPU processes)."""
    where = batch_where(batch)
    if batch["gpus"]:
        where += f" GPU{'s' * (batch['gpus'] != 1)}"
    elif where == "CPU":
        where = "the CPU"
    return f"{where} x {batch['max_tokens']} tokens x {batch['update_freq']} = {batch['tokens']} tokens an update"


def batch_where(batch: dict) -> str:
    """Where a batch (effective_batch) trains: '8' (GPUs), 'CPU', or '2 CPU ranks'."""
    ranks = batch.get("ranks") or 1
    return str(batch["gpus"]) if batch["gpus"] else ("CPU" if ranks == 1 else f"{ranks} CPU ranks")


def cpu_not_chosen(gpus, extra) -> bool:
    """Whether a run on `gpus` GPUs with these arguments trains on the CPU without --cpu."""
    return gpus == 0 and "--cpu" not in extra


def gpu_expected() -> bool:
    """Whether this machine was set up for GPUs: a CUDA build of torch, or CUDA_VISIBLE_DEVICES set."""
    import torch
    return torch.version.cuda is not None or os.environ.get("CUDA_VISIBLE_DEVICES", "") not in ("", "-1")


def check_device(gpus: int, extra) -> None:
    """Refuse to fall back to the CPU without a word where GPUs were expected but none is visible."""
    if cpu_not_chosen(gpus, extra) and gpu_expected():
        import torch
        raise RecipeError(f"no GPU is visible (torch {torch.__version__}, CUDA {torch.version.cuda}, "
                          f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '(unset)')}): check the "
                          "driver and CUDA_VISIBLE_DEVICES, or pass --cpu after the other arguments to train on the CPU")


def command(config, prepared, save_dir, extra, gpus, precision=None, benchmark="wmt14"):
    """The fairseq-train command line of CONFIG of `benchmark` (a list), in `precision` (default:
    the configuration's)."""
    configs, common, reference_gpus = BENCHMARKS[benchmark]
    if config not in configs:
        raise RecipeError(f"unknown CONFIG {config!r}; known: {', '.join(configs)}")
    check_not_half_prepared(prepared)
    data = Path(prepared) / "bin"
    if not any(data.glob("dict.*.txt")):
        raise RecipeError(f"{data} holds no fairseq data (dict.*.txt): run scripts/prepare_{benchmark}_de_en.sh first")
    arch, flags, _ = configs[config]
    source, target = DIRECTIONS[prepared_direction(prepared)]
    user_dir = str(Path(__file__).resolve().parent.parent)
    check_device(gpus, extra)
    world_size = whole(last_value(extra, "--distributed-world-size", 0)) or 0  # fairseq names a bad value
    return [tool_path("fairseq-train"), str(data.resolve()), "--user-dir", user_dir, "--arch", arch,
            "--save-dir", str(save_dir), "--log-file", str(Path(save_dir) / "train.log"),
            "--source-lang", source, "--target-lang", target,
            *common, *flags, *device_flags(gpus, precision_of(config, benchmark, gpus, precision), reference_gpus,
                                           world_size), *extra]


def precision_of(config: str, benchmark: str, gpus: int, asked=None) -> str:
    """The precision a run of CONFIG trains in: `asked`, else the configuration's (AUTO:
    auto_precision); fp32 on the CPU for fairseq's CUDA-only fp16 and amp (they fall back to
    float32 there) and for AUTO."""
    precision = asked or BENCHMARKS[benchmark][0][config].precision
    if precision == AUTO:
        return auto_precision() if gpus else "fp32"
    return "fp32" if gpus == 0 and precision in CUDA_ONLY_PRECISIONS else precision


def auto_precision() -> str:
    """bf16 (the plugin's --autocast-bf16: float32 weights, no loss scale) where the GPU has
    bf16, else amp; bf16 where no GPU is visible here (a cluster's login node building the
    command of a GPU job: the GPUs the recipe is written for, A100 and later, have it; a
    cluster of older GPUs gives compare.sh --precision amp)."""
    import torch
    if not torch.cuda.is_available():
        return "bf16"
    return "bf16" if torch.cuda.is_bf16_supported() else "amp"


def free_port() -> int:
    """A TCP port free on this machine now (the system's pick)."""
    with socket.socket() as probe:
        probe.bind(("", 0))
        return probe.getsockname()[1]


def rendezvous_flags(gpus: int):
    """How the ranks of a run on `gpus` GPUs of this machine meet: a port of the run's own
    (fairseq would draw one from SLURM_JOB_ID inside a job, the same for every run of the job,
    or at random outside one), none for one GPU or the CPU."""
    return ["--distributed-init-method", f"tcp://localhost:{free_port()}"] if gpus > 1 else []


def visible_gpus() -> int:
    import torch
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


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
        print("CONFIG is one of: " + ", ".join(BENCHMARKS[benchmark][0]))
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
    os.execv(sys.executable, [sys.executable, "-m", "fairseq_normmatters.recipes.one_run", "--", *cmd])


def gpus_per_run(benchmark: str, visible: int, asked: int = 0) -> int:
    """The GPUs a run of `benchmark` trains on: `asked` (GPUS=N), else every visible one for
    WMT14 and one for IWSLT14 (fairseq's one-GPU benchmark), at most the visible ones."""
    if asked > visible:
        raise RecipeError(f"GPUS={asked}: only {visible} GPU(s) are visible")
    return asked or (min(visible, 1) if benchmark == "iwslt14" else visible)


def visible_devices():
    """The CUDA device ids this process may use, in order."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    return listed.split(",") if listed else [str(i) for i in range(visible_gpus())]


def run_command(config, prepared, save_dir, extra, gpus, benchmark="wmt14", precision=None):
    """The fairseq-train command of CONFIG (command()) for `gpus` GPUs, in `precision` (default:
    the configuration's)."""
    return command(config, prepared, save_dir, extra, gpus, precision, benchmark)


def start_run(config, prepared, save_dir, extra, gpus, benchmark="wmt14", precision=None):
    """run_command(...), after SAVE_DIR/run.json records it: the configuration, seed and precision
    (evaluate and collect read them), the command and its result identity (compare checks them),
    and, appended to the earlier starts of a resumed run, this start's batch layout and software
    versions (a change of either is said: run_starts_changed)."""
    cmd = run_command(config, prepared, save_dir, extra, gpus, benchmark, precision)
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    batch = effective_batch(cmd, gpus)
    path = Path(save_dir) / "run.json"
    starts = json.loads(path.read_text()).get("starts", []) if path.is_file() else []
    starts.append({"at": time.strftime("%Y-%m-%d %H:%M:%S"), "effective_batch": batch, "versions": software_versions()})
    write_text_atomically(path, json.dumps(
        {"config": config, "benchmark": benchmark, "command": cmd, "effective_batch": batch,
         "precision": precision_of(config, benchmark, gpus, precision),
         "identity": result_identity(cmd, batch["tokens"]), "starts": starts}, indent=1))
    return cmd


def run_starts_changed(record: dict) -> str:
    """How a run's later starts differ from its first one ('' for none): its GPU layout of the
    same batch ('began on 8 GPUs x 4096 tokens x 1, resumed on 16 GPUs x 2048 tokens x 1') and the
    software versions that changed ('torch 2.12.0 -> 2.13.0')."""
    starts = record.get("starts", [])
    if len(starts) < 2:
        return ""
    first, changes = starts[0], []
    layouts = [layout(start["effective_batch"]) for start in starts]
    if len(set(layouts)) > 1:
        changes.append(f"began on {layouts[0]}, resumed on {', then '.join(dict.fromkeys(layouts[1:]))}")
    changes += [changed for start in starts[1:] if (changed := version_changes(first["versions"], start["versions"]))]
    return "; ".join(dict.fromkeys(changes))


def layout(batch: dict) -> str:
    """'8 GPUs x 4096 tokens x 1': GPUs x --max-tokens x --update-freq."""
    return batch_text(batch).split(" = ")[0]


if __name__ == "__main__":
    run_main(main, "train_wmt14.sh")
