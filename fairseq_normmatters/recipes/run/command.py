"""The fairseq-train command of a run: its configuration's flags after the recipe's, its device,
its batch the same on any GPU count, its precision; and the start of a run (run.json written)."""

import os
import socket
import time
from pathlib import Path

from ..common import DIRECTIONS, RecipeError, check_not_half_prepared, prepared_direction, tool_path
from .batch import effective_batch, last_value, whole
from .configs import AUTO, BENCHMARKS, CUDA_ONLY_PRECISIONS, PRECISIONS, REFERENCE_GPUS
from .folder import RunFolder
from .identity import result_identity, software_versions


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
            "--save-dir", str(save_dir), "--log-file", str(RunFolder(save_dir).train_log),
            "--source-lang", source, "--target-lang", target,
            *common, *flags, *device_flags(gpus, precision_of(config, benchmark, gpus, precision), reference_gpus,
                                           world_size), *extra]


def precision_of(config: str, benchmark: str, gpus: int, asked=None) -> str:
    """The precision a run of CONFIG trains in: `asked`, else the configuration's (AUTO:
    auto_precision); fp32 on the CPU for fairseq's CUDA-only fp16 and amp (they fall back to
    float32 there) and for AUTO."""
    precision = asked or BENCHMARKS[benchmark].configs[config].precision
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
    versions (a change of either is said: RunFolder.starts_changed)."""
    cmd = run_command(config, prepared, save_dir, extra, gpus, benchmark, precision)
    folder, batch = RunFolder(save_dir), effective_batch(cmd, gpus)
    starts = (folder.record() or {}).get("starts", [])
    starts.append({"at": time.strftime("%Y-%m-%d %H:%M:%S"), "effective_batch": batch, "versions": software_versions()})
    folder.write_record({"config": config, "benchmark": benchmark, "command": cmd, "effective_batch": batch,
                         "precision": precision_of(config, benchmark, gpus, precision),
                         "identity": result_identity(cmd, batch["tokens"]), "starts": starts})
    return cmd
