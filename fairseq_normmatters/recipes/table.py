"""The end of a comparison, whichever launcher ran it: OUT/results.md and OUT/curves.png from
every run (collect.py), and the verdict line that says at how many updates the runs compare,
whether they were on their plateau, which diverged and what the seeds can tell apart."""

import time
from pathlib import Path
from typing import List

from .collect import main as collect
from .collect import seeds_summary, still_learning, updates_cell
from .runs import Progress, Run, minutes

def write_results(runs: List[Run], out: Path, progress: Progress) -> None:
    """OUT/results.md and OUT/curves.png from every run (collect_results.py), then the verdict."""
    results, curves = out / "results.md", out / "curves.png"
    collected = collect([*(str(run.save_dir) for run in runs), "--out", str(results), "--plot", str(curves),
                         "--quiet"])
    print(f"[compare] done in {minutes(time.monotonic() - progress.started)}: table {results}, curves {curves}",
          flush=True)
    print(verdict_line(collected), flush=True)


def verdict_line(runs) -> str:
    """One line: whether the table compares runs on their plateau (and at how many updates), or
    names those still learning, and the runs that diverged."""
    learning = still_learning(runs)
    diverged = [f"{run['name']} at update {run['diverged']['update']}" for run in runs if run.get("diverged")]
    diverged_text = (f"; {len(diverged)} of {len(runs)} runs diverged ({', '.join(diverged)}): they have no scores and "
                     "the means leave them out") if diverged else ""
    if len(diverged) == len(runs):
        return f"[compare] all {len(runs)} runs diverged ({', '.join(diverged)}): there are no scores to compare"
    at = f"at {updates_cell(runs)} updates"
    seeds = seeds_summary(runs)
    seeds_text = f". Over the seeds (Welch's t-test of BLEU): {seeds}" if seeds else ""
    if not learning:
        scored = "every run that did not diverge" if diverged else "every run"
        return (f"[compare] {scored} was on its plateau (validation NLL down at most 1% of perplexity over its last "
                f"fifth): the differences compare the models {at}{diverged_text}{seeds_text}")
    return (f"[compare] {len(learning)} of {len(runs)} runs were still learning ({', '.join(learning)} of NLL over "
            f"the last fifth): the rows with them compare early training {at}, not models on their plateau; train "
            f"longer (--max-update after --) in a new OUT, or with --retrain{diverged_text}{seeds_text}")
