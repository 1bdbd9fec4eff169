"""How far a run had got: its validation curve, whether it was still learning when it stopped,
and which of its last checkpoints lie in its converged tail (the ones worth averaging).

The rules, stated once (the tables' notes, evaluate.sh --help and the README quote them):

- **still learning**: the validation loss fell by more than STILL_LEARNING_FALL (relative)
  over the last TAIL_FRACTION of the run's updates, from the last validation at or before
  update (1 - TAIL_FRACTION) x U to the last one, at U. A difference between runs of which
  one is still learning measures how fast they learn, not where they end.
- **converged tail**: of the last N checkpoints, the average keeps the newest ones whose
  validation loss is at most AVERAGE_TOLERANCE (relative) above the last checkpoint's,
  stopping at the first that is not; a checkpoint's validation loss is that of the last
  validation at or before its update.
"""

import json
from pathlib import Path
from typing import List, Optional, Tuple

TAIL_FRACTION = 0.2
STILL_LEARNING_FALL = 0.02
AVERAGE_TOLERANCE = 0.02

Curve = List[Tuple[int, float]]  # [(updates, validation loss)], in the order of training


def validation_curve(save_dir: Path) -> Curve:
    """[(updates, validation loss)] from the run's fairseq json log (SAVE_DIR/train.log), one
    point per update count (a resumed run that validated an update twice keeps its last)."""
    points = {}
    log = Path(save_dir) / "train.log"
    for line in log.read_text(encoding="utf-8").splitlines() if log.is_file() else []:
        if '"valid_loss"' in line:  # bare json in --log-file, "... | valid | {json}" on the console
            record = json.loads(line[line.index("{"):])
            points[int(float(record["valid_num_updates"]))] = float(record["valid_loss"])
    return sorted(points.items())


def loss_at(curve: Curve, updates: int) -> Optional[float]:
    """The loss of the last validation at or before `updates` (None before the first)."""
    earlier = [loss for at, loss in curve if at <= updates]
    return earlier[-1] if earlier else None


def tail_fall(curve: Curve) -> Optional[float]:
    """The relative fall of the validation loss over the last TAIL_FRACTION of the updates
    (positive: it fell), or None with fewer than two validations."""
    if len(curve) < 2:
        return None
    last_update, last_loss = curve[-1]
    start = loss_at(curve, int(last_update * (1 - TAIL_FRACTION)))
    start = curve[0][1] if start is None else start
    return (start - last_loss) / start


def training_state(curve: Curve) -> dict:
    """{"tail_fall": relative fall or None, "still_learning": True/False/None (unknown)}."""
    fall = tail_fall(curve)
    return {"tail_fall": None if fall is None else round(fall, 4),
            "still_learning": None if fall is None else fall > STILL_LEARNING_FALL}


def state_cell(state: dict) -> str:
    """'-0.4%', or '12.3% still learning', or '—' when unknown: for the tables."""
    fall = state.get("tail_fall")
    if fall is None:
        return "—"
    return f"{100 * fall:.1f}%" + (" still learning" if state.get("still_learning") else "")


RULES = (f"Tail fall: how much the validation loss still fell over the last {TAIL_FRACTION:.0%} of a run's "
         f"updates (relative; from the last validation at or before {1 - TAIL_FRACTION:.0%} of them to the last). "
         f"A run whose loss fell more than {STILL_LEARNING_FALL:.0%} there is marked still learning.")


def converged_tail(checkpoints: List[Tuple[int, Path]], curve: Curve):
    """(kept, reason): the newest of `checkpoints` ([(updates, path)], by update) whose
    validation loss is within AVERAGE_TOLERANCE of the newest's, stopping at the first one
    above; reason says why the others were left out ('' if none was). Without a validation
    at or before the newest checkpoint, the rule cannot be applied: (None, why)."""
    newest_updates = checkpoints[-1][0]
    newest_loss = loss_at(curve, newest_updates)
    if newest_loss is None:
        return None, f"no validation loss at or before update {newest_updates} in train.log"
    kept = []
    for updates, path in reversed(checkpoints):
        loss = loss_at(curve, updates)
        if loss is None or loss > newest_loss * (1 + AVERAGE_TOLERANCE):
            shown = "unknown" if loss is None else f"{loss:.3f}"
            return kept[::-1], (f"update {updates}'s validation loss ({shown}) is more than "
                                f"{AVERAGE_TOLERANCE:.0%} above the last checkpoint's ({newest_loss:.3f})")
        kept.append((updates, path))
    return kept[::-1], ""


def averaged_span(averaged: dict) -> str:
    """'500-600', or '600' for one checkpoint: the updates an evaluation averaged (its
    results.json "averaged" record)."""
    first, last = averaged["first_update"], averaged["last_update"]
    return str(last) if first == last else f"{first}-{last}"
