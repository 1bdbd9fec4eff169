#!/usr/bin/env python3
"""End-to-end training speed of the plugin's models, as ratios to the baseline in one run.

Trains every architecture with fairseq-train on the same data, seed and flags, and prints the
training words/s (fairseq's wps, median over the epochs after the first) and its ratio to the
baseline of its family (Transformer: stock L2 LayerNorm; LSTM: no normalization). With
--rounds R every model trains R times in turn and the ratio is the median of the R ratios
within a round (a shared machine drifts over minutes). Also times the BWN LSTM decoder with
and without the per-forward weight cache.

    python scripts/bench_models.py [--data DATA_BIN] [--updates 80] [--rounds 1] [--only NAME ...] [--json FILE]
"""

import argparse
import json
import re
import statistics
import tempfile
import time
from pathlib import Path

import torch

import fairseq_normmatters
from fairseq_normmatters.recipes import run_main, run_tool
from toy_data import write_parallel_text

USER_DIR = str(Path(fairseq_normmatters.__file__).parent)
TRANSFORMER = ["--encoder-layers", "2", "--decoder-layers", "2", "--encoder-embed-dim", "128",
               "--decoder-embed-dim", "128", "--encoder-ffn-embed-dim", "512",
               "--decoder-ffn-embed-dim", "512", "--encoder-attention-heads", "4",
               "--decoder-attention-heads", "4", "--share-all-embeddings"]
LSTM = ["--encoder-embed-dim", "128", "--encoder-hidden-size", "128", "--decoder-embed-dim", "128",
        "--decoder-hidden-size", "128", "--decoder-out-embed-dim", "128"]
RUNS = [  # (name, arch, flags, baseline names)
    ("transformer_l2", "norm_transformer_iwslt_de_en", TRANSFORMER, ("transformer_l2",)),
    ("transformer_l1", "norm_transformer_l1_iwslt_de_en", TRANSFORMER, ("transformer_l2",)),
    ("transformer_linf", "norm_transformer_linf_iwslt_de_en", TRANSFORMER, ("transformer_l2",)),
    ("transformer_topk", "norm_transformer_iwslt_de_en", TRANSFORMER + ["--norm-type", "topk"], ("transformer_l2",)),
    ("transformer_bwn", "norm_transformer_bwn_iwslt_de_en", TRANSFORMER,
     ("transformer_l2", "transformer_none")),  # BWN replaces layer norm: also against none
    ("transformer_none", "norm_transformer_iwslt_de_en", TRANSFORMER + ["--norm-type", "none"], ("transformer_l2",)),
    ("lstm_none", "norm_lstm_iwslt_de_en", LSTM, ("lstm_none",)),
    ("lstm_bwn", "norm_lstm_bwn_iwslt_de_en", LSTM, ("lstm_none",)),
]
TRAINING = ["--optimizer", "adam", "--lr", "0.0005", "--lr-scheduler", "inverse_sqrt",
            "--warmup-updates", "100", "--max-tokens", "2000", "--criterion",
            "label_smoothed_cross_entropy", "--label-smoothing", "0.1", "--cpu", "--seed", "1",
            "--no-save", "--disable-validation", "--log-format", "simple", "--num-workers", "0"]


def make_data(root: Path) -> Path:
    raw = write_parallel_text(root / "raw", (("train", 3000), ("valid", 100), ("test", 100)),
                              vocab_size=2000, lengths=(10, 30))
    run_tool("fairseq-preprocess", "--source-lang", "de", "--target-lang", "en", "--trainpref",
        raw / "train", "--validpref", raw / "valid", "--testpref", raw / "test",
        "--destdir", root / "bin", "--joined-dictionary", "--workers", "2", quiet=True)
    return root / "bin"


def words_per_second(data, arch, flags, updates):
    log = run_tool("fairseq-train", data, "--user-dir", USER_DIR, "--arch", arch, "--max-update", updates,
                   *TRAINING, *flags, quiet=True)
    wps = [float(x) for x in re.findall(r"\| train \| epoch \d+ \|.*?\| wps ([\d.]+)", log)]
    return statistics.median(wps[1:] or wps)


def record(name, arch, speeds, baseline, rounds):
    """name's median words/s and the median of its per-round ratios to baseline (printed)."""
    ratios = [a / b for a, b in zip(speeds[name], speeds[baseline])]
    r = {"name": name, "arch": arch, "wps": statistics.median(speeds[name]), "baseline": baseline,
         "ratio": statistics.median(ratios), "round_ratios": ratios}
    rounds_text = f"  (rounds: {', '.join(f'{x:.3f}' for x in ratios)})" if rounds > 1 else ""
    print(f"{name:18s} {r['wps']:10.0f} words/s  {r['ratio']:5.3f}x {baseline}{rounds_text}", flush=True)
    return r


def decoder_cache_ratio(repeats=5):
    """Seconds of fwd+bwd of a BWN LSTM decoder without / with the per-forward weight cache."""
    from torch.nn.utils import parametrize
    from fairseq_normmatters import apply_weight_norm
    cell = torch.nn.ModuleList([torch.nn.LSTMCell(512, 512), torch.nn.LSTMCell(512, 512)])
    apply_weight_norm(cell, "bwn")
    x = torch.randn(50, 32, 512)

    def step():
        h = [(torch.zeros(32, 512), torch.zeros(32, 512)) for _ in cell]
        out = 0
        for x_t in x:
            inp = x_t
            for i, layer in enumerate(cell):
                h[i] = layer(inp, h[i])
                inp = h[i][0]
            out = out + inp.sum()
        out.backward()

    def timed(cached):
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            if cached:
                with parametrize.cached():
                    step()
            else:
                step()
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    timed(True)
    return timed(False), timed(True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--data", help="a fairseq-preprocess'ed directory (default: toy data)")
    parser.add_argument("--updates", type=int, default=80)
    parser.add_argument("--rounds", type=int, default=1, help="train every model this many times in turn")
    parser.add_argument("--only", nargs="+", help="run names to include (their baselines run too)")
    parser.add_argument("--json", help="write the records to this file")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or make_data(Path(tmp))
        wanted = set(args.only or [r[0] for r in RUNS])
        wanted |= {base for r in RUNS if r[0] in wanted for base in r[3]}  # baselines too
        runs = [run for run in RUNS if run[0] in wanted]
        speeds = {name: [] for name, *_ in runs}
        for _ in range(args.rounds):
            for name, arch, flags, _ in runs:
                speeds[name].append(words_per_second(data, arch, flags, args.updates))
        records = [record(name, arch, speeds, baseline, args.rounds)
                   for name, arch, _, baselines in runs for baseline in baselines]
    uncached, cached = decoder_cache_ratio()
    print(f"BWN LSTMCell decoder (2x512, 50 steps, batch 32) fwd+bwd: uncached {uncached * 1e3:.0f} ms, "
          f"cached {cached * 1e3:.0f} ms, {uncached / cached:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(records, indent=1))


if __name__ == "__main__":
    run_main(main, "bench_models.py")
