"""A run's folder: the one owner of the names, reading and writing of every file in it (think of
submitit's JobPaths), for every stage that touches a run.

    run.json             what the run was begun as: configuration, benchmark, precision, the
                         fairseq-train command, its result identity, and each start (batch, versions)
    results.json         its evaluation (evaluate.py): scores, averaged span, state of training
    train.log            fairseq-train's json log (validations: convergence.py)
    compare.log          the output of its process in a comparison (compare-nodeK.log: node K's)
    slurm.json           its SLURM job and the earlier jobs with their endings
    slurm-events.jsonl   each stop on a signal inside a SLURM job
    run.lock             the lock of the process that trains there (lock.py)
    checkpoint*.pt       fairseq's checkpoints; checkpoint_avg.pt the averaged one
    FOLDER.replaced-DATE a run moved aside by --retrain, beside it, kept whole
"""

import json
import time
from pathlib import Path
from typing import List, Optional

from ..common import write_text_atomically
from .batch import layout
from .identity import version_changes


class RunFolder:
    """The files of the run in `path` (a run folder, SAVE_DIR)."""

    def __init__(self, path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def record_path(self) -> Path:
        return self.path / "run.json"

    @property
    def results_path(self) -> Path:
        return self.path / "results.json"

    @property
    def train_log(self) -> Path:
        return self.path / "train.log"

    def compare_log(self, node: int = 0) -> Path:
        return self.path / ("compare.log" if node == 0 else f"compare-node{node}.log")

    @property
    def slurm_path(self) -> Path:
        return self.path / "slurm.json"

    @property
    def slurm_events_path(self) -> Path:
        return self.path / "slurm-events.jsonl"

    @property
    def lock_path(self) -> Path:
        return self.path / "run.lock"

    @property
    def averaged_checkpoint(self) -> Path:
        return self.path / "checkpoint_avg.pt"

    def checkpoints(self) -> List[Path]:
        return sorted(self.path.glob("checkpoint*.pt"))

    def record(self) -> Optional[dict]:
        """run.json, or None where the run has none."""
        return read_json(self.record_path)

    def results(self) -> Optional[dict]:
        """results.json, or None for a run not evaluated."""
        return read_json(self.results_path)

    def is_evaluated(self) -> bool:
        return self.results_path.is_file()

    def has_work(self) -> bool:
        """Whether the run holds something a new command would count or resume."""
        return self.is_evaluated() or bool(self.checkpoints())

    def write_record(self, record: dict) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        write_text_atomically(self.record_path, json.dumps(record, indent=1))

    def write_results(self, results: dict) -> None:
        write_text_atomically(self.results_path, json.dumps(results, indent=1))

    def slurm_record(self) -> Optional[dict]:
        """slurm.json: {"job_id", "stdout", "stderr", "submitted", "ending" (once ended),
        "history" (the earlier jobs' records)} of the run's last job, or None for a run never
        submitted."""
        return read_json(self.slurm_path)

    def write_slurm_record(self, record: dict) -> None:
        write_text_atomically(self.slurm_path, json.dumps(record, indent=1))

    def add_slurm_event(self, event: dict) -> None:
        with self.slurm_events_path.open("a", encoding="utf-8") as events:
            events.write(json.dumps(event) + "\n")

    def slurm_events(self) -> list:
        path = self.slurm_events_path
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []

    def starts_changed(self) -> str:
        """How the run's later starts differ from its first one ('' for none): its GPU layout of the
        same batch ('began on 8 GPUs x 4096 tokens x 1, resumed on 16 GPUs x 2048 tokens x 1') and
        the software versions that changed ('torch 2.12.0 -> 2.13.0')."""
        return starts_changed((self.record() or {}).get("starts", []))

    def move_aside(self) -> Path:
        return move_aside(self.path)


def move_aside(path: Path) -> Path:
    """Rename a folder to FOLDER.replaced-YYYYmmdd-HHMMSS beside it (kept whole); the new path."""
    target = path.with_name(f"{path.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}")
    path.rename(target)
    return target


def read_json(path: Path) -> Optional[dict]:
    return json.loads(path.read_text()) if path.is_file() else None


def starts_changed(starts: list) -> str:
    """RunFolder.starts_changed of a run.json's list of starts."""
    if len(starts) < 2:
        return ""
    first, changes = starts[0], []
    layouts = [layout(start["effective_batch"]) for start in starts]
    if len(set(layouts)) > 1:
        changes.append(f"began on {layouts[0]}, resumed on {', then '.join(dict.fromkeys(layouts[1:]))}")
    changes += [changed for start in starts[1:] if (changed := version_changes(first["versions"], start["versions"]))]
    return "; ".join(dict.fromkeys(changes))
