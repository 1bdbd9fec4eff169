"""Collect evaluated runs into Markdown tables beside the paper's numbers, and plot them.

    scripts/collect_results.py SAVE_DIR... [--out results.md] [--plot curves.png]

Reads SAVE_DIR/results.json (from evaluate.sh) and the validation losses of SAVE_DIR/train.log
(fairseq's json log) of every run. The first table lists every run; the second groups the runs
of one CONFIG (its seeds: mean, standard deviation, n) and compares each configuration with
the baseline of its family (transformer_l2, lstm_nonorm): the difference of the means with its
standard error over the seeds, and for each seed both were trained with, sacreBLEU's paired
bootstrap resampling test on the test set (the difference and its p-value), beside the
paper's difference. The plot shows every run's validation curve.
"""

import argparse
import json
import logging
import math
import statistics
from pathlib import Path

from . import RecipeError, run_main, write_atomically, write_text_atomically

# config -> (BLEU, perplexity) reported by Hoffer et al. 2018 on WMT14 de-en (runs of another
# benchmark get no paper numbers)
PAPER = {"transformer_l2": (27.3, 5.1), "transformer_l1": (None, 5.2), "transformer_bwn": (26.5, None),
         "lstm_nonorm": (21.5, None), "lstm_bwn": (21.2, None)}


def load_run(save_dir: Path) -> dict:
    path = save_dir / "results.json"
    if not path.is_file():
        raise RecipeError(f"{path} is missing: run scripts/evaluate.sh {save_dir} PREPARED_DIR first")
    return {**json.loads(path.read_text()), "name": save_dir.name, "curve": validation_curve(save_dir)}


def validation_curve(save_dir: Path):
    """[(updates, validation loss)] from fairseq's json log."""
    curve = []
    log = save_dir / "train.log"
    for line in log.read_text().splitlines() if log.is_file() else []:
        if '"valid_loss"' in line:  # bare json in --log-file, "... | valid | {json}" on the console
            record = json.loads(line[line.index("{"):])
            curve.append((int(float(record["valid_num_updates"])), float(record["valid_loss"])))
    return curve


def fmt(value, digits=2):
    return "—" if value is None else f"{value:.{digits}f}"


FAMILY_BASELINES = {"transformer": "transformer_l2", "lstm": "lstm_nonorm"}
BOOTSTRAP_SAMPLES = 1000


def baseline_of(config: str):
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
    baseline, system, reference = (path.read_text(encoding="utf-8").splitlines() for path in paths)
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


def paper_numbers(run, config=None):
    """(BLEU, perplexity) the paper reports for the run's configuration on its benchmark."""
    if run.get("benchmark", "wmt14") != "wmt14":
        return None, None
    return PAPER.get(config or run["config"], (None, None))


def paper_difference(run, index: int) -> str:
    """The paper's difference of the run's configuration from its family's baseline (index 0:
    BLEU, 1: perplexity)."""
    config, baseline = run["config"], baseline_of(run["config"])
    value, base = paper_numbers(run)[index], paper_numbers(run, baseline)[index]
    return "—" if value is None or base is None or config == baseline else f"{value - base:+.1f}"


def comparison_table(runs) -> str:
    """One row per configuration: its seeds' mean ± sd, and its difference from its family's baseline."""
    groups = {}
    for run in runs:
        groups.setdefault(run["config"], []).append(run)
    rows = ["| config | seeds | BLEU | ΔBLEU vs baseline | paired bootstrap (test set) | paper ΔBLEU | "
            "valid ppl | Δ valid ppl | test ppl | Δ test ppl | paper Δppl |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for config, members in groups.items():
        baseline = groups.get(baseline_of(config)) if baseline_of(config) != config else None
        seeds = ", ".join(str(r.get("seed", "?")) for r in members)
        compare = (lambda key: difference(members, baseline, key)) if baseline else (lambda key: "—")
        rows.append(f"| {config} | {seeds} | {mean_and_sd([r['bleu'] for r in members])} | {compare('bleu')} | "
                    f"{bootstrap_cell(members, baseline) if baseline else '—'} | "
                    f"{paper_difference(members[0], 0)} | "
                    f"{mean_and_sd([r['valid_ppl'] for r in members])} | {compare('valid_ppl')} | "
                    f"{mean_and_sd([r['test_ppl'] for r in members])} | {compare('test_ppl')} | "
                    f"{paper_difference(members[0], 1)} |")
    return "\n".join(rows) + (
        "\n\nΔ: a configuration's mean minus its baseline's (transformer_l2, lstm_nonorm), ± the standard "
        "error of that difference over the seeds (with 2+ seeds of each). Paired bootstrap: sacreBLEU's "
        f"test of the two translations of one seed ({BOOTSTRAP_SAMPLES} resamples of the test set); it "
        "measures the test set's noise, not the training run's: the seeds measure that.\n")


def table(runs) -> str:
    rows = ["| run | config | seed | updates | BLEU (sacreBLEU) | BLEU (tok.) | BLEU (lc, tok.) | valid ppl | "
            "test ppl | paper BLEU | paper ppl |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for run in runs:
        paper_bleu, paper_ppl = paper_numbers(run)
        rows.append(f"| {run['name']} | {run['config']} | {run.get('seed', '—')} | {run.get('num_updates', '—')} | "
                    f"{fmt(run['bleu'])} | {fmt(run['bleu_tok'])} | {fmt(run.get('bleu_lowercase'))} | "
                    f"{fmt(run['valid_ppl'])} | {fmt(run['test_ppl'])} | {fmt(paper_bleu, 1)} | {fmt(paper_ppl, 1)} |")
    signatures = sorted({run["sacrebleu_signature"] for run in runs})
    return "\n".join(rows) + "\n\nsacreBLEU signature: " + "; ".join(signatures) + \
        "\nPaper: Hoffer et al. 2018, WMT14 de-en (Transformer base, 2-layer LSTM); none for other benchmarks.\n"


def require_matplotlib() -> None:
    """Raise RecipeError, before anything is written, if --plot cannot work here."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise RecipeError("--plot needs matplotlib, which is not installed: pip install matplotlib "
                          "(or the package's extra: pip install 'fairseq_normmatters[plot]'), or leave --plot out") from None


def plot(runs, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    figure, axis = plt.subplots(figsize=(7, 4.5))
    for run in runs:
        if run["curve"]:
            updates, losses = zip(*run["curve"])
            axis.plot(updates, losses, marker="o", label=f"{run['name']} ({run['config']}, seed {run.get('seed', '?')})")
    axis.set_xlabel("updates")
    axis.set_ylabel("validation loss (label-smoothed, base 2)")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    write_atomically(path, lambda temporary: figure.savefig(temporary, dpi=120, format=path.suffix[1:] or "png"))


def main(argv=None):
    parser = argparse.ArgumentParser(prog="collect_results.py", description=__doc__.splitlines()[0])
    parser.add_argument("save_dirs", nargs="+")
    parser.add_argument("--out", help="write the Markdown table here too")
    parser.add_argument("--plot", help="PNG of validation loss per update")
    parser.add_argument("--quiet", action="store_true", help="print nothing (with --out)")
    args = parser.parse_args(argv)
    if args.plot:
        require_matplotlib()
    runs = [load_run(Path(d)) for d in args.save_dirs]
    text = table(runs) + "\n" + comparison_table(runs)
    if not args.quiet:
        print(text)
    if args.out:
        write_text_atomically(Path(args.out), text)
    if args.plot:
        plot(runs, Path(args.plot))
        if not args.quiet:
            print(f"plot: {args.plot}")


if __name__ == "__main__":
    run_main(main, "collect_results.py")
