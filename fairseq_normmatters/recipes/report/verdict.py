"""The verdict line of a comparison, under its tables (collect.py): at how many updates the runs
compare, whether they were on their plateau, which diverged and what the seeds can tell apart."""

from .collect import (baseline_of, configuration_groups, doubling_text, improving_at_budget, seeds_summary,
                      still_learning, updates_cell)


def precisions_text(runs) -> str:
    """'' when every run trained in one precision, else a sentence naming each configuration's:
    its differences then include those of the arithmetic."""
    precisions = {}
    for run in runs:
        precisions.setdefault(run["config"], set()).add(run.get("precision") or "unknown")
    if len(set().union(*precisions.values())) < 2:
        return ""
    named = ", ".join(f"{config} {'/'.join(sorted(found))}" for config, found in precisions.items())
    return (f". The rows trained in different precisions ({named}): their differences include the arithmetic's, "
            "not the norms' alone (compare.sh --precision)")


def verdict_line(runs) -> str:
    """One line: whether the table compares runs on their plateau or at their schedule's budget
    (and at how many updates, and whether one doubling of the budget could change a difference),
    or names those in early training, and the runs that diverged."""
    learning, improving = still_learning(runs), improving_at_budget(runs)
    diverged = [f"{run['name']} at update {run['diverged']['update']}" for run in runs if run.get("diverged")]
    diverged_text = (f"; {len(diverged)} of {len(runs)} runs diverged ({', '.join(diverged)}): they have no scores and "
                     "the means leave them out") if diverged else ""
    if len(diverged) == len(runs):
        return f"[compare] all {len(runs)} runs diverged ({', '.join(diverged)}): there are no scores to compare"
    at = f"at {updates_cell(runs)} updates"
    seeds = seeds_summary(runs)
    seeds_text = f". Over the seeds (Welch's t-test of BLEU): {seeds}" if seeds else ""
    seeds_text += precisions_text(runs)
    if learning:
        return (f"[compare] {len(learning)} of {len(runs)} runs were in early training, still learning before "
                f"their schedule ended or stopped in its warm-up ({', '.join(learning)} of NLL over the last "
                f"fifth): the rows with them compare early training "
                f"{at}, not the models at a budget; train longer (--max-update after --) in a new OUT, or with "
                f"--retrain{diverged_text}{seeds_text}")
    scored = "every run that did not diverge" if diverged else "every run"
    if improving:
        return (f"[compare] {scored} ran its whole schedule; {len(improving)} of {len(runs)} were still improving at "
                f"its end ({', '.join(improving)} of NLL over the last fifth): the differences compare the models "
                f"at this budget, {at}, as papers compare them. {doubling_summary(runs)}{diverged_text}{seeds_text}")
    return (f"[compare] {scored} was on its plateau (validation NLL down at most 1% of perplexity over its last "
            f"fifth): the differences compare the models {at}{diverged_text}{seeds_text}")


def doubling_summary(runs) -> str:
    """Which configurations' differences one doubling of the budget could change (the curves
    cross, or move beyond the seeds' spread), from each curve's last half fitted by a + b U^-c;
    only the rows with a run still improving at its budget (a row on its plateau is not
    extrapolated: its curves no longer fall)."""
    flagged, fitted = [], 0
    for config, members, baseline in configuration_groups(runs):
        improving = baseline and improving_at_budget(members + baseline)
        text = doubling_text(members, baseline) if improving else ""
        fitted += bool(text)
        if "could change" in text:
            flagged.append(f"{config} against {baseline_of(config)}: {text}")
    if not fitted:
        return "Too few validations to extrapolate the curves"
    if not flagged:
        return "Extrapolated one doubling (a + b U^-c over each curve's last half), no difference would move beyond " \
               "the seeds' spread"
    return "Extrapolated one doubling (a + b U^-c over each curve's last half): " + "; ".join(flagged)
