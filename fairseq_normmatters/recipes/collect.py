"""Collect evaluated runs into a Markdown table beside the paper's numbers, and plot them.

    scripts/collect_results.py SAVE_DIR... [--out results.md] [--plot curves.png]

Reads SAVE_DIR/results.json (from evaluate.sh) and the validation losses of SAVE_DIR/train.log
(fairseq's json log) of every run.
"""

import argparse
import json
from pathlib import Path

from . import RecipeError, run_main, write_atomically, write_text_atomically

# config -> (BLEU, perplexity) reported by Hoffer et al. 2018 on WMT14 de-en
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


def table(runs) -> str:
    rows = ["| run | config | updates | BLEU (sacreBLEU) | BLEU (tok.) | valid ppl | test ppl | paper BLEU | paper ppl |",
            "|---|---|---|---|---|---|---|---|---|"]
    for run in runs:
        paper_bleu, paper_ppl = PAPER.get(run["config"], (None, None))
        rows.append(f"| {run['name']} | {run['config']} | {run.get('num_updates', '—')} | {fmt(run['bleu'])} | "
                    f"{fmt(run['bleu_tok'])} | {fmt(run['valid_ppl'])} | {fmt(run['test_ppl'])} | "
                    f"{fmt(paper_bleu, 1)} | {fmt(paper_ppl, 1)} |")
    signatures = sorted({run["sacrebleu_signature"] for run in runs})
    return "\n".join(rows) + "\n\nsacreBLEU signature: " + "; ".join(signatures) + \
        "\nPaper: Hoffer et al. 2018, WMT14 de-en (Transformer base, 2-layer LSTM).\n"


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
            axis.plot(updates, losses, marker="o", label=f"{run['name']} ({run['config']})")
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
    args = parser.parse_args(argv)
    if args.plot:
        require_matplotlib()
    runs = [load_run(Path(d)) for d in args.save_dirs]
    text = table(runs)
    print(text)
    if args.out:
        write_text_atomically(Path(args.out), text)
    if args.plot:
        plot(runs, Path(args.plot))
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    run_main(main, "collect_results.py")
