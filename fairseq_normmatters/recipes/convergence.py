"""How far a run had got: its validation curve, whether it was still learning when it stopped,
and which of its last checkpoints lie in its converged tail (the ones worth averaging).

The curve is the validation NLL in bits a target token (fairseq's `valid_nll_loss`; the
`valid_loss` of a criterion without label smoothing, which is the NLL), not the label-smoothed
`valid_loss`: with smoothing 0.1 and a 32k vocabulary that one has a floor of about 1.97 bits
that a perfect model still scores, so a relative fall of it hides most of the fall of the NLL.
Falls are absolute, in bits, which is the relative change of the perplexity (2^bits).

The rules, stated once (the tables' notes, compare.sh and evaluate.sh --help and the README
quote them):

- **still learning / plateau**: a run is on its plateau when its validation NLL fell by at most
  PLATEAU_BITS (1% of perplexity) over the last TAIL_FRACTION of its updates, from the last
  validation at or before update (1 - TAIL_FRACTION) x U to the last one, at U; else it was
  still learning. A power-law tail a + b U^-c that falls f bits over its last fifth gains
  another 1-3 f by doubling the run (2.45 f for c = 1/2), so a plateau is within about 3% of
  perplexity of what twice the training would reach, while a WMT14 Transformer at 100k updates
  (about 0.03 bits over its last fifth) is still learning. A difference between runs of which
  one is still learning measures how fast they learn, not where they end.
- **converged tail**: of the last N checkpoints, the average keeps the newest ones whose
  validation NLL is at most AVERAGE_TOLERANCE_BITS (2% of perplexity) above the last
  checkpoint's, stopping at the first that is not; a checkpoint's NLL is that of the last
  validation at or before its update.
"""

import json
import math
from pathlib import Path
from typing import List, Optional, Tuple

TAIL_FRACTION = 0.2
PLATEAU_BITS = math.log2(1.01)  # the perplexity 1% lower
AVERAGE_TOLERANCE_BITS = math.log2(1.02)  # the perplexity 2% higher

Curve = List[Tuple[int, float]]  # [(updates, validation NLL in bits)], in the order of training


def validation_curve(save_dir: Path) -> Curve:
    """[(updates, validation NLL)] from the run's fairseq json log (SAVE_DIR/train.log), one
    point per update count (a resumed run that validated an update twice keeps its last)."""
    points = {}
    log = Path(save_dir) / "train.log"
    for line in log.read_text(encoding="utf-8").splitlines() if log.is_file() else []:
        if '"valid_loss"' in line:  # bare json in --log-file, "... | valid | {json}" on the console
            record = json.loads(line[line.index("{"):])
            nll = record.get("valid_nll_loss", record["valid_loss"])
            points[int(float(record["valid_num_updates"]))] = float(nll)
    return sorted(points.items())


def loss_at(curve: Curve, updates: int) -> Optional[float]:
    """The NLL of the last validation at or before `updates` (None before the first)."""
    earlier = [loss for at, loss in curve if at <= updates]
    return earlier[-1] if earlier else None


def tail_fall(curve: Curve) -> Optional[float]:
    """The fall of the validation NLL in bits over the last TAIL_FRACTION of the updates
    (positive: it fell), or None with fewer than two validations."""
    if len(curve) < 2:
        return None
    last_update, last_loss = curve[-1]
    start = loss_at(curve, int(last_update * (1 - TAIL_FRACTION)))
    start = curve[0][1] if start is None else start
    return start - last_loss


def training_state(curve: Curve) -> dict:
    """{"updates": the last validation's, "tail_fall_bits": fall or None, "still_learning":
    True/False/None (unknown)}."""
    fall = tail_fall(curve)
    return {"updates": curve[-1][0] if curve else None,
            "tail_fall_bits": None if fall is None else round(fall, 4),
            "still_learning": None if fall is None else fall > PLATEAU_BITS}


def fall_text(fall_bits: float) -> str:
    """'0.0272 bits (1.90% of perplexity)'."""
    return f"{fall_bits:.4f} bits ({100 * (2 ** fall_bits - 1):.2f}% of perplexity)"


def state_cell(state: dict) -> str:
    """'plateau, -0.0020 bits (-0.14% of perplexity)' or 'still learning, 0.0500 bits (3.53% ...)',
    or '—' when unknown: for the tables."""
    fall = state.get("tail_fall_bits")
    if fall is None:
        return "—"
    return ("still learning, " if state.get("still_learning") else "plateau, ") + fall_text(fall)


RULES = (f"State of training: how much the validation NLL (bits a token, not the label-smoothed loss) still "
         f"fell over the last {TAIL_FRACTION:.0%} of a run's updates, from the last validation at or before "
         f"{1 - TAIL_FRACTION:.0%} of them to the last; a run is on its plateau when it fell at most "
         f"{PLATEAU_BITS:.4f} bits (1% of perplexity), else still learning (a power-law tail that falls f there "
         "still gains 1-3 f by doubling the run).")


def converged_tail(checkpoints: List[Tuple[int, Path]], curve: Curve):
    """(kept, reason): the newest of `checkpoints` ([(updates, path)], by update) whose
    validation NLL is within AVERAGE_TOLERANCE_BITS of the newest's, stopping at the first one
    above; reason says why the others were left out ('' if none was). Without a validation
    at or before the newest checkpoint, the rule cannot be applied: (None, why)."""
    newest_updates = checkpoints[-1][0]
    newest_loss = loss_at(curve, newest_updates)
    if newest_loss is None:
        return None, f"no validation loss at or before update {newest_updates} in train.log"
    kept = []
    for updates, path in reversed(checkpoints):
        loss = loss_at(curve, updates)
        if loss is None or loss > newest_loss + AVERAGE_TOLERANCE_BITS:
            shown = "unknown" if loss is None else f"{loss:.3f}"
            return kept[::-1], (f"update {updates}'s validation NLL ({shown} bits) is more than "
                                f"{AVERAGE_TOLERANCE_BITS:.3f} bits (2% of perplexity) above the last "
                                f"checkpoint's ({newest_loss:.3f})")
        kept.append((updates, path))
    return kept[::-1], ""


def averaged_span(averaged: dict) -> str:
    """'500-600', or '600' for one checkpoint: the updates an evaluation averaged (its
    results.json "averaged" record)."""
    first, last = averaged["first_update"], averaged["last_update"]
    return str(last) if first == last else f"{first}-{last}"
