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
- **at budget / early training**: a run that ran its whole schedule (its --max-update, or
  its --max-epoch) is compared at that budget, as translation papers compare, whether or not it
  was still learning; its row says how much it still fell. A run still learning that stopped
  before its schedule ended, or any run stopped within its warm-up, is in early training: a
  difference then measures how fast the runs learn, not where they end.
- **one doubling**: whether training twice as long could change a difference at the budget is
  estimated from each run's validation NLL over the last half of its updates, fitted by
  a + b U^-c (c from 0.1 to 1.5; a least-squares line in U^-c for each) and extrapolated to
  twice its updates (doubling_gain).
- **converged tail**: of the last N checkpoints, the average keeps the newest ones whose
  validation NLL is at most AVERAGE_TOLERANCE_BITS (2% of perplexity) above the last
  checkpoint's, stopping at the first that is not; a checkpoint's NLL is that of the last
  validation at or before its update.
"""

import json
import math
from pathlib import Path
from typing import List, Optional, Tuple

from .folder import RunFolder

TAIL_FRACTION = 0.2
PLATEAU_BITS = math.log2(1.01)  # the perplexity 1% lower
AVERAGE_TOLERANCE_BITS = math.log2(1.02)  # the perplexity 2% higher

Curve = List[Tuple[int, float]]  # [(updates, validation NLL in bits)], in the order of training


def validation_curve(save_dir: Path) -> Curve:
    """[(updates, validation NLL)] from the run's fairseq json log (SAVE_DIR/train.log), one
    point per update count (a resumed run that validated an update twice keeps its last)."""
    points = {}
    log = RunFolder(save_dir).train_log
    for line in log.read_text(encoding="utf-8").splitlines() if log.is_file() else []:
        if '"valid_loss"' in line:  # bare json in --log-file, "... | valid | {json}" on the console
            record = json.loads(line[line.index("{"):])
            nll = record.get("valid_nll_loss", record["valid_loss"])
            points[int(float(record["valid_num_updates"]))] = float(nll)
    return sorted(points.items())


def last_validated_epoch(save_dir: Path) -> int:
    """The epoch of the run's last validation in SAVE_DIR/train.log (0 without one)."""
    log, epoch = RunFolder(save_dir).train_log, 0
    for line in log.read_text(encoding="utf-8").splitlines() if log.is_file() else []:
        if '"valid_loss"' in line:
            epoch = int(float(json.loads(line[line.index("{"):]).get("epoch", 0)))
    return epoch


def schedule_budget(save_dir: Path, command: List[str], updates: Optional[int]) -> Tuple[Optional[int], int]:
    """(budget, warm-up) of a run's fairseq-train command: the update count its schedule ends
    at (--max-update; for a --max-epoch schedule, the run's `updates` once its last validation
    is in that epoch, else None: unknown) and its --warmup-updates (0 without)."""
    def value(flag):
        values = [command[i + 1] for i, argument in enumerate(command[:-1]) if argument == flag]
        try:
            return int(float(values[-1])) if values else 0
        except ValueError:
            return 0
    max_update, max_epoch = value("--max-update"), value("--max-epoch")
    epochs_done = max_epoch > 0 and updates is not None and last_validated_epoch(save_dir) >= max_epoch
    budget = min(max_update or updates, updates) if epochs_done else (max_update or None)
    return budget, value("--warmup-updates")


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


PLATEAU, AT_BUDGET, EARLY = "plateau", "at budget", "early training"


def training_state(curve: Curve, budget: Optional[int] = None, warmup: int = 0) -> dict:
    """{"updates": the last validation's, "tail_fall_bits": fall or None, "still_learning":
    True/False/None (unknown), "budget": the update count its schedule ends at (None: unknown),
    "phase": PLATEAU, AT_BUDGET (still learning at the end of its schedule), EARLY (still
    learning before it, or stopped within its warm-up of `warmup` updates) or None (unknown),
    "doubling_gain_bits": doubling_gain(curve)}."""
    fall = tail_fall(curve)
    updates = curve[-1][0] if curve else None
    if fall is None:
        phase = None
    elif updates <= warmup:
        phase = EARLY
    elif fall <= PLATEAU_BITS:
        phase = PLATEAU
    else:
        phase = AT_BUDGET if budget is not None and updates >= budget else EARLY
    gain = doubling_gain(curve)
    return {"updates": updates, "tail_fall_bits": None if fall is None else round(fall, 4),
            "still_learning": None if fall is None else fall > PLATEAU_BITS, "budget": budget, "phase": phase,
            "doubling_gain_bits": None if gain is None else round(gain, 4)}


def phase_of(state: dict) -> Optional[str]:
    """A training state's phase (that of a results.json written before phases: plateau, or
    early training when still learning)."""
    if "phase" in state:
        return state["phase"]
    learning = state.get("still_learning")
    return None if learning is None else (EARLY if learning else PLATEAU)


def doubling_gain(curve: Curve) -> Optional[float]:
    """How much lower the validation NLL would be at twice the run's updates (bits; 0 for a
    curve that rises), from a + b U^-c fitted over the last half of its updates (3+ validations
    there), else None."""
    if not curve:
        return None
    last = curve[-1][0]
    tail = [(u, loss) for u, loss in curve if u >= last / 2 and u > 0]
    if len(tail) < 3:
        return None
    best = None
    for c in [0.1 * i for i in range(1, 16)]:
        xs, ys = [u ** -c for u, _ in tail], [loss for _, loss in tail]
        mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
        spread_x = sum((x - mean_x) ** 2 for x in xs)
        if spread_x == 0:
            continue
        b = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / spread_x
        residual = sum((mean_y + b * (x - mean_x) - y) ** 2 for x, y in zip(xs, ys))
        if best is None or residual < best[0]:
            best = (residual, b, c)
    if best is None:
        return None
    _, b, c = best
    return max(0.0, b * (last ** -c - (2 * last) ** -c))


def fall_text(fall_bits: float) -> str:
    """'0.0272 bits (1.90% of perplexity)'."""
    return f"{fall_bits:.4f} bits ({100 * (2 ** fall_bits - 1):.2f}% of perplexity)"


def state_cell(state: dict) -> str:
    """'plateau, -0.0020 bits (-0.14% of perplexity)', 'at budget, still improving, 0.0272 bits
    (1.90% ...)' or 'early training, 0.0500 bits (3.53% ...)', or '—' when unknown: for the tables."""
    fall, phase = state.get("tail_fall_bits"), phase_of(state)
    if fall is None:
        return "—"
    return {PLATEAU: "plateau, ", AT_BUDGET: "at budget, still improving, ", EARLY: "early training, "}[phase] + \
        fall_text(fall)


RULES = (f"State of training: how much the validation NLL (bits a token, not the label-smoothed loss) still "
         f"fell over the last {TAIL_FRACTION:.0%} of a run's updates, from the last validation at or before "
         f"{1 - TAIL_FRACTION:.0%} of them to the last; a run is on its plateau when it fell at most "
         f"{PLATEAU_BITS:.4f} bits (1% of perplexity), else still learning (a power-law tail that falls f there "
         "still gains 1-3 f by doubling the run). A run still learning at the end of its whole schedule "
         "(--max-update or --max-epoch) is at budget, compared there as papers compare; one still learning "
         "before its schedule ended, or stopped in its warm-up, is in early training. Whether one doubling of "
         "the budget could change a difference: each run's NLL over the last half of its updates fitted by "
         "a + b U^-c and extrapolated to twice its updates.")


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
