"""The validation curves of a comparison's runs (OUT/curves.png): every run's validation NLL per
update, one colour per configuration, the checkpoints its evaluation averaged marked."""

import math
from pathlib import Path

from ..common import RecipeError, write_atomically


def require_matplotlib() -> None:
    """Raise RecipeError, before anything is written, if --plot cannot work here."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise RecipeError("--plot needs matplotlib, which is not installed: pip install matplotlib "
                          "(or the package's extra: pip install 'fairseq_normmatters[plot]'), or leave --plot out") from None


def plot_curves(runs, path: Path) -> None:
    """Validation loss per update: the whole curves (log scale) and their second half (linear),
    one colour per configuration, each seed a thin line in it, the checkpoints its evaluation
    averaged as dots; a legend of the configurations."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import ScalarFormatter
    figure, (whole, tail) = plt.subplots(1, 2, figsize=(11, 4.5))
    colours = plt.get_cmap("tab10").colors
    configs = list(dict.fromkeys(run["config"] for run in runs))
    last_update = max((run["curve"][-1][0] for run in runs if run["curve"]), default=1)
    for run in runs:
        colour = colours[configs.index(run["config"]) % len(colours)]
        for axis, start in ((whole, 0), (tail, last_update / 2)):
            curve = [(u, loss) for u, loss in run["curve"] if u >= start]
            if curve:
                axis.plot(*zip(*curve), color=colour, linewidth=1, alpha=0.8)
            averaged = [(u, loss) for u, loss in curve if in_averaged_range(run, u)]
            if averaged:
                axis.plot(*zip(*averaged), color=colour, linestyle="none", marker="o", markersize=4)
    for index, config in enumerate(configs):
        seeds = ", ".join(str(r.get("seed", "?")) for r in runs if r["config"] == config)
        whole.plot([], [], color=colours[index % len(colours)], label=f"{config} (seeds {seeds})")
    whole.plot([], [], color="grey", linestyle="none", marker="o", markersize=4, label="checkpoints averaged")
    whole.set_yscale("log")
    whole.yaxis.set_major_formatter(ScalarFormatter())
    whole.yaxis.set_minor_formatter(ScalarFormatter())
    whole.set_title("validation NLL")
    tail.set_title("its second half")
    for axis in (whole, tail):
        axis.set_xlabel("updates")
        axis.grid(alpha=0.3, which="both")
    whole.set_ylabel("validation NLL, bits a token (log scale)")
    whole.legend()
    figure.tight_layout()
    write_atomically(path, lambda temporary: figure.savefig(temporary, dpi=110, format=path.suffix[1:] or "png"))
    plt.close(figure)


def in_averaged_range(run, updates: int) -> bool:
    averaged = run.get("averaged") or {}
    return averaged.get("first_update", math.inf) <= updates <= averaged.get("last_update", -math.inf)
