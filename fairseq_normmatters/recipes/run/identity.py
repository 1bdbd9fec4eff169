"""What decides a run's result, and what it ran under.

A run's identity is what two trainings must share to be the same experiment: its fairseq-train
arguments without the places (WHERE_FLAGS: folders, rendezvous), the prepared data by content
(prepare.json's settings and a fingerprint of the binarized files, not their path: a moved
PREPARED is the same data), and the batch an update sees in tokens, not how it is split over
GPUs (--max-tokens, --update-freq, --distributed-world-size: 8 x 4096 x 1 and 16 x 2048 x 1 are
one batch). The versions of the software and the GPU model can change a result too, but a run
resumed under others is the same experiment: they are recorded (run.json "starts") and a change
is said, never refused.
"""

import functools
import hashlib
import importlib.metadata
import json
from pathlib import Path
from typing import Dict, List

#: the flags of a fairseq-train command that name where the run is, not what it trains
WHERE_FLAGS = ("--user-dir", "--save-dir", "--log-file", "--distributed-init-method", "--distributed-port")
#: the flags that split the effective batch over GPUs; the batch's tokens stand for them
SPLIT_FLAGS = ("--max-tokens", "--update-freq", "--distributed-world-size")
SAMPLED_BYTES = 1 << 20  # of a .bin file, the first and last MiB are hashed (its size and .idx: all of it)


def training_arguments(command) -> List[str]:
    """A fairseq-train command without the program's path and the values of WHERE_FLAGS."""
    return without_flags(command[1:], WHERE_FLAGS)


def without_flags(arguments, flags) -> List[str]:
    """`arguments` without each of `flags` and the value after it."""
    kept, skip = [], False
    for argument in arguments:
        if not skip and argument not in flags:
            kept.append(argument)
        skip = not skip and argument in flags
    return kept


def data_fingerprint(data_dir: str) -> str:
    """A sha256 (16 hex digits) of the binarized data in DATA_DIR (fairseq-preprocess's folder)
    and the settings of the prepare.json beside it: the dictionaries and .idx files whole (the
    .idx hold every sentence's length), each .bin by its size and its first and last MiB. The
    same for a copy anywhere; computed once a process while no file of it changes (seconds
    for WMT14's 4.5M pairs)."""
    files = tuple(sorted(p for p in Path(data_dir).iterdir() if p.is_file() and p.suffix in (".txt", ".idx", ".bin")))
    marker = Path(data_dir).parent / "prepare.json"
    stats = tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files + (marker,) if p.is_file())
    return fingerprint_of(files, marker, stats)


@functools.lru_cache(maxsize=None)
def fingerprint_of(files, marker: Path, stats) -> str:
    """data_fingerprint's hash of `files` and `marker`'s settings (`stats`: their sizes and times,
    which key the cache)."""
    digest = hashlib.sha256()
    settings = json.loads(marker.read_text()).get("settings", {}) if marker.is_file() else {}
    digest.update(json.dumps(settings, sort_keys=True).encode())
    for path in files:
        digest.update(f"{path.name}:{path.stat().st_size}:".encode())
        with path.open("rb") as file:
            if path.suffix != ".bin":
                digest.update(file.read())
                continue
            digest.update(file.read(SAMPLED_BYTES))
            file.seek(max(0, path.stat().st_size - SAMPLED_BYTES))
            digest.update(file.read())
    return digest.hexdigest()[:16]


def result_identity(command, batch_tokens) -> Dict:
    """{"arguments", "data", "batch_tokens"}: what decides the result of a training with this
    fairseq-train command (its first argument the data folder) and batch."""
    arguments = training_arguments(command)
    data = Path(arguments[0])
    return {"arguments": without_flags(arguments[1:], SPLIT_FLAGS),
            "data": data_fingerprint(str(data.resolve())) if data.is_dir() else f"missing: {data}",
            "batch_tokens": batch_tokens}


def software_versions() -> Dict[str, str]:
    """The versions that can change a result: the plugin's, fairseq's, torch's, CUDA's, and the
    model of the first visible GPU (None on a CPU)."""
    import torch

    def installed(*names):
        for name in names:
            try:
                return importlib.metadata.version(name)
            except importlib.metadata.PackageNotFoundError:
                continue
        return None
    return {"fairseq_normmatters": installed("fairseq_normmatters"), "fairseq": installed("fairseq", "ve-fairseq"),
            "torch": torch.__version__, "cuda": torch.version.cuda,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def version_changes(before: Dict, now: Dict) -> str:
    """'torch 2.12.0 -> 2.13.0; gpu NVIDIA A100 -> NVIDIA H100', or '' where nothing changed."""
    return "; ".join(f"{name} {before.get(name)} -> {now.get(name)}" for name in now if before.get(name) != now.get(name))
