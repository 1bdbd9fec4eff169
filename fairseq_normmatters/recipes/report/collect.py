"""Collect evaluated runs into Markdown tables beside the paper's numbers, and plot them.

    scripts/collect_results.py SAVE_DIR... [--out results.md] [--plot curves.png]

Reads SAVE_DIR/results.json (from evaluate.sh) and the validation losses of SAVE_DIR/train.log
(fairseq's json log) of every run. The first table lists every run with its state of training
(how much its validation NLL still fell over its last fifth, in bits; recipes/run/convergence.py
states the rule) and the update range its evaluation averaged; the second groups the runs of one CONFIG
(its seeds: mean, standard deviation, n) and compares each configuration with the baseline of
its family (transformer_l2, lstm_nonorm; a CONFIG_acc_FORMAT with CONFIG, the same model
accumulating in float32): the difference of the means with its standard error
over the seeds, Welch's t-test of the two sets of seeds ('worse', 'better' or 'within the
seeds' spread'; recipes/report/welch.py), and for each seed both were trained with, sacreBLEU's paired bootstrap
resampling test on the test set (the difference and its p-value), beside the paper's
difference where the paper has one for the runs' direction; a row whose runs or baseline runs
were still learning says so. A run that diverged (its results.json says where) has no scores:
both tables say so and the means leave it out. The plot shows every run's validation curve, one
colour per configuration, with the averaged checkpoints marked.
"""

import argparse
import logging
import math
import statistics
from pathlib import Path
from typing import NamedTuple, Optional

from ..common import RecipeError, read_lines, run_main, write_text_atomically
from ..run.convergence import (AT_BUDGET, EARLY, PLATEAU, RULES, averaged_span, phase_of, schedule_budget, state_cell,
                          training_state, validation_curve)
from ..run.scoring import TOKENIZED_METHOD
from ..run.batch import batch_where
from ..run.configs import ACCUMULATION_SUFFIX
from ..run.folder import RunFolder
from .curves import plot_curves, require_matplotlib
from .welch import SIGNIFICANCE, welch_test

# config -> metric -> (value, WMT14 direction it was measured in, source). Hoffer et al. 2018
# report their runs as WMT14 de-en; the 27.3 beside them is Vaswani et al.'s base Transformer
# on English->German. A number is shown only beside runs of its direction and benchmark, and
# the tables' notes say in what terms each was measured (PAPER_TERMS).
PAPER = {"transformer_l2": {"bleu": (27.3, "en-de", "Vaswani et al. 2017"), "ppl": (5.1, "de-en", "Hoffer et al.")},
         "transformer_l1": {"ppl": (5.2, "de-en", "Hoffer et al.")},
         "transformer_bwn": {"bleu": (26.5, "de-en", "Hoffer et al.")},
         "lstm_nonorm": {"bleu": (21.5, "de-en", "Hoffer et al.")},
         "lstm_bwn": {"bleu": (21.2, "de-en", "Hoffer et al.")}}
PAPER_TERMS = {
    ("Vaswani et al. 2017", "bleu"): "tokenized BLEU with compound splitting (##AT##-##AT##) on newstest2014 en-de: "
                                     "read it against the BLEU (tok.) of en-de runs, not against sacreBLEU",
    ("Hoffer et al.", "bleu"): "BLEU on WMT14 de-en, its tokenization not stated in the paper: the nearest column is "
                               "BLEU (tok.)",
    ("Hoffer et al.", "ppl"): "perplexity per token of the authors' own subword vocabulary (32k BPE in their "
                              "recipe); ours is per sentencepiece piece of PREPARED's vocabulary, so the two "
                              "units differ with the segmentation and only differences between rows compare"}


def paper_notes(runs) -> str:
    """What each paper number shown beside these runs measures, in its own terms ('' if none is shown)."""
    shown = {}
    for run in runs:
        for metric in ("bleu", "ppl"):
            if paper_number(run, metric) is not None:
                value, direction, source = PAPER[run["config"]][metric]
                shown.setdefault((source, metric), []).append(f"{value} ({run['config']})")
    return "".join(f" Paper {'BLEU' if metric == 'bleu' else 'perplexity'} of {source} "
                   f"({', '.join(dict.fromkeys(values))}): {PAPER_TERMS[source, metric]}."
                   for (source, metric), values in shown.items())


SCORES = ("bleu", "bleu_tok", "bleu_lowercase", "valid_ppl", "test_ppl", "sacrebleu_signature")


def load_run(save_dir: Path) -> dict:
    folder = RunFolder(save_dir)
    results = folder.results()
    if results is None:
        raise RecipeError(f"{folder.results_path} is missing: run scripts/evaluate.sh {save_dir} PREPARED_DIR first")
    run = {**results, "name": folder.name, "curve": validation_curve(save_dir)}
    for score in SCORES:  # a diverged run has none: the means and tests leave it out
        run.setdefault(score, None)
    run.setdefault("direction", "de-en")
    record = folder.record() or {}
    if run["curve"] or "training" not in run:  # the rule of today, also for runs evaluated before it
        updates = run["curve"][-1][0] if run["curve"] else None
        run["training"] = training_state(run["curve"], *schedule_budget(save_dir, record.get("command", []), updates))
    run["resumed_elsewhere"] = folder.starts_changed()
    return run


def fmt(value, digits=2):
    return "—" if value is None else f"{value:.{digits}f}"


FAMILY_BASELINES = {"transformer": "transformer_l2", "lstm": "lstm_nonorm"}
BOOTSTRAP_SAMPLES = 1000


def baseline_of(config: str):
    """The configuration `config` is compared with: the same model accumulating in float32 for
    a narrow accumulation (transformer_l1_acc_bf16 -> transformer_l1), else its family's baseline."""
    if ACCUMULATION_SUFFIX in config:
        return config.split(ACCUMULATION_SUFFIX)[0]
    return FAMILY_BASELINES.get(config.split("_", 1)[0])


def spread(values):
    """(mean, sample standard deviation or None, n)."""
    values = [v for v in values if v is not None]
    if not values:
        return None, None, 0
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else None, len(values)


def mean_and_sd(values, digits=2) -> str:
    mean, sd, _ = spread(values)
    return fmt(mean, digits) + ("" if sd is None else f" ± {sd:.{digits}f}")


def difference(runs, baseline_runs, key, digits=2) -> str:
    """The difference of the means of `key`, with its standard error when both have 2+ seeds."""
    (mean, sd, n), (base_mean, base_sd, base_n) = spread(r[key] for r in runs), spread(r[key] for r in baseline_runs)
    if mean is None or base_mean is None:
        return "—"
    text = f"{mean - base_mean:+.{digits}f}"
    if sd is not None and base_sd is not None:
        text += f" ± {math.sqrt(sd ** 2 / n + base_sd ** 2 / base_n):.{digits}f}"
    return text


def paired_bootstrap(run, baseline_run):
    """(BLEU difference, p-value) of sacreBLEU's paired bootstrap resampling of the test set
    (1000 resamples, sacreBLEU's fixed seed), or None without both translations."""
    from sacrebleu.metrics import BLEU
    from sacrebleu.significance import PairedTest
    paths = [Path(r.get("hypotheses", "")) for r in (baseline_run, run)] + [Path(run.get("reference", ""))]
    if not all(path.is_file() for path in paths):
        return None
    baseline, system, reference = (read_lines(path) for path in paths)
    logging.getLogger("sacrebleu").setLevel(logging.WARNING)
    test = PairedTest([("baseline", baseline), ("system", system)], {"BLEU": BLEU()}, [reference],
                      test_type="bs", n_samples=BOOTSTRAP_SAMPLES)
    _, scores = test()
    base_result, result = scores["BLEU"]
    return result.score - base_result.score, result.p_value


def bootstrap_cell(runs, baseline_runs) -> str:
    """'seed S: +d (p x)' for every seed that both configurations were trained with."""
    baseline_by_seed = {r.get("seed"): r for r in baseline_runs}
    cells = []
    for run in sorted(runs, key=lambda r: r.get("seed") or 0):
        if run.get("seed") in baseline_by_seed and (test := paired_bootstrap(run, baseline_by_seed[run["seed"]])):
            cells.append(f"seed {run['seed']}: {test[0]:+.2f} (p {test[1]:.3f})")
    return "; ".join(cells) or "—"


def paper_number(run, metric: str, config=None):
    """The paper's `metric` (bleu, ppl) for the run's configuration (or `config`), if it was
    measured on the run's benchmark (WMT14) and direction; else None."""
    value, direction, _ = PAPER.get(config or run["config"], {}).get(metric, (None, None, None))
    same_setting = run.get("benchmark", "wmt14") == "wmt14" and run.get("direction", "de-en") == direction
    return value if same_setting else None


def paper_difference(run, metric: str) -> str:
    """The paper's difference of the run's configuration from its family's baseline, when both
    numbers were measured in the run's setting."""
    config, baseline = run["config"], baseline_of(run["config"])
    value, base = paper_number(run, metric), paper_number(run, metric, baseline)
    return "—" if value is None or base is None or config == baseline else f"{value - base:+.1f}"


def in_phase(runs, phase):
    """The runs (not diverged) in `phase`, as 'name (0.0500 bits)': their fall over the last fifth."""
    return [f"{r['name']} ({r['training']['tail_fall_bits']:.4f} bits)" for r in runs
            if phase_of(r["training"]) == phase and not r.get("diverged")]


def still_learning(runs):
    """The runs in early training: still learning before their schedule ended (or in their warm-up)."""
    return in_phase(runs, EARLY)


def improving_at_budget(runs):
    """The runs still learning at the end of their whole schedule."""
    return in_phase(runs, AT_BUDGET)


def final_nll(runs):
    """The last validation NLL of each scored run with a curve."""
    return [r["curve"][-1][1] for r in runs if r.get("curve") and not r.get("diverged")]


def doubling_change(members, baseline):
    """(NLL difference now, extrapolated at twice the updates, the seeds' standard error of the
    difference or None) of a configuration against its baseline (bits; negative: lower NLL),
    from the runs' last validations and their doubling gains; None where a side has no fit."""
    sides = []
    for group in (members, baseline):
        finals = final_nll(group)
        gains = [r["training"].get("doubling_gain_bits") for r in group if r.get("curve") and not r.get("diverged")]
        if not finals or None in gains:
            return None
        sides.append((statistics.mean(finals), statistics.mean(gains),
                      statistics.stdev(finals) ** 2 / len(finals) if len(finals) > 1 else None))
    (mean, gain, var), (base_mean, base_gain, base_var) = sides
    now = mean - base_mean
    error = None if var is None or base_var is None else math.sqrt(var + base_var)
    return now, now - gain + base_gain, error


def doubling_text(members, baseline) -> str:
    """Whether one doubling of the budget could change the configuration's difference from its
    baseline: the curves cross (the ordering changes), or the NLL difference moves by more than
    the seeds' standard error; '' without a fit."""
    change = doubling_change(members, baseline)
    if change is None:
        return ""
    now, doubled, error = change
    moved = f"NLL difference {now:+.4f} -> {doubled:+.4f} bits at twice the updates"
    if now * doubled < 0:
        return f"the curves cross within one doubling ({moved}): the ordering could change"
    if error is None:
        return f"one doubling: {moved} (1 seed: no spread to judge it by)"
    if abs(doubled - now) > error:
        return f"one doubling could change the difference beyond the seeds' spread ({moved}; spread {error:.4f})"
    return f"one doubling would not change it beyond the seeds' spread ({moved}; spread {error:.4f})"


def diverged_cell(runs) -> str:
    """'none', or each diverged run's seed and update: 'seed 2 at update 300'."""
    diverged = [f"seed {r.get('seed', '?')} at update {r['diverged']['update']}" for r in runs if r.get("diverged")]
    return ", ".join(diverged) or "none"


def state_of_comparison(members, baseline) -> str:
    """'plateau'; 'early training: ...' naming the runs (the configuration's and its baseline's)
    still learning before their schedule ended, so that the difference reads as one of speed; or
    'at budget: ...' naming those still improving at its end, and whether one doubling of the
    budget could change the difference (doubling_text)."""
    runs = members + (baseline or [])
    learning = still_learning(runs)
    if learning:
        return "early training: " + ", ".join(learning) + " still learning"
    if any(phase_of(r["training"]) is None for r in runs if not r.get("diverged")):
        return "unknown (a run has no validation curve)"
    improving = improving_at_budget(runs)
    if not improving:
        return PLATEAU
    doubling = doubling_text(members, baseline) if baseline else ""
    return f"at budget: {', '.join(improving)} still improving" + (f"; {doubling}" if doubling else "")


def updates_cell(runs) -> str:
    """'600' or '480-600': the updates the scored runs of a row (and so its comparison) stopped at."""
    counts = sorted({r.get("num_updates") for r in runs if r.get("num_updates") is not None and not r.get("diverged")})
    if not counts:
        return "—"
    return str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"


def configuration_groups(runs):
    """[(config, its runs, its baseline's runs or None)] in the order the runs came."""
    groups = {}
    for run in runs:
        groups.setdefault(run["config"], []).append(run)
    return [(config, members, groups.get(baseline_of(config)) if baseline_of(config) != config else None)
            for config, members in groups.items()]


def seeds_test(members, baseline):
    """Welch's test of the configuration's BLEU against its baseline's over their seeds (the
    scored runs), or None without 2+ scored seeds on each side."""
    if not baseline:
        return None
    scores = [[r["bleu"] for r in group if r.get("bleu") is not None] for group in (members, baseline)]
    return welch_test(*scores)


def seeds_judgement(test) -> str:
    """'worse', 'better' or 'within the seeds' spread' (Welch's p at SIGNIFICANCE), or '—'."""
    if test is None:
        return "—"
    if test.p >= SIGNIFICANCE:
        return "within the seeds' spread"
    return "worse" if test.difference < 0 else "better"


def seeds_cell(members, baseline) -> str:
    test = seeds_test(members, baseline)
    judgement = seeds_judgement(test)
    return judgement if test is None else f"{judgement} (p {test.p:.3f})"


def seeds_summary(runs) -> str:
    """The configurations that differ from their baselines beyond the seeds' spread, and those
    within it: 'transformer_none is worse than transformer_l2 (-5.20 BLEU, p 0.012); transformer_l1
    is within the seeds' spread of it (p 0.620)'; '' where no row has 2+ seeds a side."""
    parts = []
    for config, members, baseline in configuration_groups(runs):
        test = seeds_test(members, baseline)
        if test is None:
            continue
        judgement, baseline_name = seeds_judgement(test), baseline_of(config)
        if judgement == "within the seeds' spread":
            parts.append(f"{config} is within the seeds' spread of {baseline_name} ({test.difference:+.2f} BLEU, "
                         f"p {test.p:.3f})")
        else:
            parts.append(f"{config} is {judgement} than {baseline_name} ({test.difference:+.2f} BLEU, p {test.p:.3f})")
    return "; ".join(parts)


def comparison_table(runs) -> str:
    """One row per configuration: its seeds' mean ± sd, and its difference from its family's baseline."""
    rows = ["| config | seeds | BLEU | ΔBLEU vs baseline | over the seeds (Welch) | paired bootstrap (test set) | "
            "paper ΔBLEU | valid ppl | Δ valid ppl | test ppl | Δ test ppl | paper Δppl | diverged | "
            "compared at updates | state of training |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for config, members, baseline in configuration_groups(runs):
        seeds = ", ".join(str(r.get("seed", "?")) for r in members)
        compare = (lambda key: difference(members, baseline, key)) if baseline else (lambda key: "—")
        rows.append(f"| {config} | {seeds} | {mean_and_sd([r['bleu'] for r in members])} | {compare('bleu')} | "
                    f"{seeds_cell(members, baseline)} | "
                    f"{bootstrap_cell(members, baseline) if baseline else '—'} | "
                    f"{paper_difference(members[0], 'bleu')} | "
                    f"{mean_and_sd([r['valid_ppl'] for r in members])} | {compare('valid_ppl')} | "
                    f"{mean_and_sd([r['test_ppl'] for r in members])} | {compare('test_ppl')} | "
                    f"{paper_difference(members[0], 'ppl')} | {diverged_cell(members)} | "
                    f"{updates_cell(members + (baseline or []))} | {state_of_comparison(members, baseline)} |")
    return "\n".join(rows) + (
        "\n\nΔ: a configuration's mean minus its baseline's (transformer_l2, lstm_nonorm; for CONFIG_acc_FORMAT, "
        "CONFIG: the same model with its norms accumulating in float32), ± the standard "
        "error of that difference over the seeds (with 2+ seeds of each). Over the seeds: Welch's t-test of the "
        f"BLEU means (2+ scored seeds of each): 'worse' or 'better' when its two-sided p is below {SIGNIFICANCE}, "
        "else 'within the seeds' spread' (with 2 seeds a side it needs a difference about 4 standard errors "
        "wide); a diverged run (its training's "
        "gradients turned NaN or inf) has no scores and is left out of the means. Paired bootstrap: sacreBLEU's "
        f"test of the two translations of one seed ({BOOTSTRAP_SAMPLES} resamples of the test set); it "
        "measures the test set's noise, not the training run's: the seeds measure that. Compared at updates: "
        "where the row's runs and its baseline's stopped. State of training: 'plateau' when every run of the "
        "row and of its baseline was on its plateau; 'at budget' when they all ran their whole schedule and "
        "some were still improving at its end (the difference is the one at this budget; whether one doubling "
        "could change it beyond the seeds' spread is said); 'early training' when a run of the row or of its "
        "baseline was still learning before its schedule ended (" + RULES + "); "
        "its difference then measures how fast the two learn, not where they end.\n")


def table(runs) -> str:
    rows = ["| run | config | seed | batch | precision | updates | averaged | state of training (NLL fall, last "
            "fifth) | BLEU (sacreBLEU) | BLEU (tok.) | BLEU (lc, tok.) | valid ppl | test ppl | paper BLEU | paper ppl |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for run in runs:
        batch = run.get("effective_batch")
        batch = f"{batch_where(batch)} x {batch['max_tokens']} x {batch['update_freq']}" if batch else "—"
        state = f"diverged at update {run['diverged']['update']}" if run.get("diverged") else state_cell(run['training'])
        rows.append(f"| {run['name']} | {run['config']} | {run.get('seed', '—')} | {batch} | "
                    f"{run.get('precision') or '—'} | {run.get('num_updates', '—')} | {averaged_cell(run)} | {state} | "
                    f"{fmt(run['bleu'])} | {fmt(run['bleu_tok'])} | {fmt(run.get('bleu_lowercase'))} | "
                    f"{fmt(run['valid_ppl'])} | {fmt(run['test_ppl'])} | {fmt(paper_number(run, 'bleu'), 1)} | "
                    f"{fmt(paper_number(run, 'ppl'), 1)} |")
    return "\n".join(rows) + "\n\n" + resumed_elsewhere(runs) + table_notes(runs)


def resumed_elsewhere(runs) -> str:
    """A warning naming the runs resumed on another GPU layout or under other software versions
    than they began with (run.json's starts), or ''."""
    changed = [f"{run['name']}: {run['resumed_elsewhere']}" for run in runs if run.get("resumed_elsewhere")]
    return ("**Resumed elsewhere** (the same experiment; versions can move a result a little): "
            + "; ".join(changed) + ".\n\n") if changed else ""


def averaged_cell(run) -> str:
    """'500-600 (5)' or '600 (1 of 5, narrowed)': the updates of the averaged checkpoints."""
    averaged = run.get("averaged")
    if not averaged:
        return "—"
    narrowed = f" of {averaged['asked']}, narrowed" if averaged.get("narrowed") else ""
    return f"{averaged_span(averaged)} ({averaged['checkpoints']}{narrowed})"


def table_notes(runs) -> str:
    """What the first table's columns are, for the runs' directions."""
    targets = sorted({run["direction"].split("-")[1] for run in runs})
    methods = "; ".join(f"into {t}: {TOKENIZED_METHOD[t]}" for t in targets if t in TOKENIZED_METHOD)
    signatures = sorted({run["sacrebleu_signature"] for run in runs if run["sacrebleu_signature"]})
    directions = ", ".join(sorted({f"{run.get('benchmark', 'wmt14')} {run['direction']}" for run in runs}))
    return (f"Runs: {directions}. sacreBLEU signature: " + "; ".join(signatures) + ". BLEU (tok.): " + methods +
            ", BLEU as multi-bleu.perl computes it; BLEU (lc, tok.): the same lowercased (IWSLT14 papers). "
            "Precision: what the run trained in (one for every configuration: bf16 autocast on GPUs with bf16, "
            "else amp, fp32 on a CPU, unless compare.sh --precision said otherwise; fp16 and amp are fp32 on a "
            "CPU). "
            "Batch: GPUs (over all nodes; CPU: one) x --max-tokens x --update-freq, the tokens an update "
            "sees at most (the recipes make it the benchmark's reference: WMT14 8 x 4096, IWSLT14 1 x 4096). "
            "Updates: the run's last; averaged: the updates of the checkpoints averaged for evaluation "
            "(narrowed: the older ones' validation NLL was too far above the last's; evaluate.sh --help). "
            + RULES + "\nPaper: Hoffer et al. 2018 report WMT14 de-en (Transformer base, 2-layer LSTM); the "
            "27.3 BLEU they compare with is Vaswani et al.'s base Transformer on WMT14 en-de. Each number is "
            "shown only beside WMT14 runs of the direction it was measured in." + paper_notes(runs) + "\n")


class Report(NamedTuple):
    """The runs read (load_run) and the Markdown of their two tables."""
    runs: list
    text: str


def write_table(save_dirs, out: Optional[Path] = None, plot: Optional[Path] = None) -> Report:
    """The tables of the runs in `save_dirs`, written to `out` and their validation curves to
    `plot` (a PNG) where given; nothing is written unless every run reads and matplotlib is there."""
    if plot:
        require_matplotlib()
    runs = [load_run(Path(d)) for d in save_dirs]
    text = table(runs) + "\n" + comparison_table(runs)
    if out:
        write_text_atomically(Path(out), text)
    if plot:
        plot_curves(runs, Path(plot))
    return Report(runs, text)


def main(argv=None):
    """collect_results.py: write_table with the command line's SAVE_DIRs, --out and --plot; the
    tables printed unless --quiet; returns the runs read."""
    parser = argparse.ArgumentParser(prog="collect_results.py", description=__doc__.splitlines()[0])
    parser.add_argument("save_dirs", nargs="+")
    parser.add_argument("--out", help="write the Markdown table here too")
    parser.add_argument("--plot", help="PNG of validation loss per update")
    parser.add_argument("--quiet", action="store_true", help="print nothing (with --out)")
    args = parser.parse_args(argv)
    report = write_table(args.save_dirs, args.out, args.plot)
    if not args.quiet:
        print(report.text)
        if args.plot:
            print(f"plot: {args.plot}")
    return report.runs


if __name__ == "__main__":
    run_main(main, "collect_results.py")
