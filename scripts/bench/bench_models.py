#!/usr/bin/env python3
"""End-to-end training speed of the plugin's models, as ratios to the baseline in one run.

Trains every architecture with fairseq-train on the same data, seed and flags, and prints the
training words/s (fairseq's wps, median over the epochs after the first) and its ratio to the
baseline of its family (Transformer: stock L2 LayerNorm; LSTM: no normalization). With
--rounds R every model trains R times in turn and the ratio is the median of the R ratios
within a round (a shared machine drifts over minutes). Also times the BWN LSTM decoder with
and without the per-forward weight cache.

    python scripts/bench/bench_models.py [--data DATA_BIN] [--updates 80] [--rounds 1] [--only NAME ...] [--json FILE]

--device cuda trains the WMT14 recipe's base Transformer (6 layers, 512 wide, --max-tokens 4096,
the comparison's precision: bf16 autocast where the GPU has bf16, else amp) with L2, L1, L-inf,
top-k, BWN and none on one GPU, each for --updates updates (default 300) in interleaved rounds,
and prints each one's steady-state words/s (the median of fairseq's per-10-update wps after the
first third of the run), its ratio to its baseline and its peak GPU memory (allocated, as the
preflight's runner reads it: recipes/run/preflight.py).
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
from fairseq_normmatters.recipes.common import run_main, run_tool, tool_path
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
CUDA_RUNS = [  # the WMT14 recipe's base Transformer: (name, arch, flags, baseline names)
    ("transformer_l2", "norm_transformer_wmt_en_de", [], ("transformer_l2",)),
    ("transformer_l1", "norm_transformer_l1_wmt_en_de", [], ("transformer_l2",)),
    ("transformer_linf", "norm_transformer_linf_wmt_en_de", [], ("transformer_l2",)),
    ("transformer_topk", "norm_transformer_topk_wmt_en_de", [], ("transformer_l2",)),
    ("transformer_bwn", "norm_transformer_bwn_wmt_en_de", [], ("transformer_l2", "transformer_none")),
    ("transformer_none", "norm_transformer_wmt_en_de", ["--norm-type", "none"], ("transformer_l2",)),
]
CUDA_TRAINING = ["--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--lr", "0.0007", "--lr-scheduler",
                 "inverse_sqrt", "--warmup-updates", "4000", "--warmup-init-lr", "1e-07", "--max-tokens", "4096",
                 "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1", "--share-all-embeddings",
                 "--seed", "1", "--no-save", "--disable-validation", "--log-format", "json", "--log-interval", "10",
                 "--num-workers", "2"]
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


def cuda_words_per_second(data, arch, flags, updates, folder: Path):
    """(steady-state words/s, peak GPU memory in GB) of one run on the GPU, through the
    preflight's runner (recipes/run/preflight.py), which records the peak."""
    from fairseq_normmatters.recipes.run.preflight import inner_records, train_recorded
    from fairseq_normmatters.recipes.run.command import auto_precision
    from fairseq_normmatters.recipes.run.configs import PRECISIONS
    folder.mkdir(parents=True, exist_ok=True)
    command = [tool_path("fairseq-train"), str(data), "--user-dir", USER_DIR, "--arch", arch, "--max-update",
               str(updates), *CUDA_TRAINING, *PRECISIONS[auto_precision()], "--log-file", str(folder / "train.log"),
               *flags]
    record, _ = train_recorded(command, folder, arch)
    records = inner_records(folder)
    wps = [float(r["wps"]) for r in records[len(records) // 3:]]
    (folder / "train.log").unlink()
    return statistics.median(wps), record["peak_memory_gb"]


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
    parser.add_argument("--updates", type=int, help="updates a run (default 80; 300 with --device cuda)")
    parser.add_argument("--rounds", type=int, default=1, help="train every model this many times in turn")
    parser.add_argument("--only", nargs="+", help="run names to include (their baselines run too)")
    parser.add_argument("--json", help="write the records to this file")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="cuda: the WMT14 base Transformers on one GPU (see the text above)")
    args = parser.parse_args(argv)
    if args.device == "cuda":
        return bench_cuda(args)
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or make_data(Path(tmp))
        wanted = set(args.only or [r[0] for r in RUNS])
        wanted |= {base for r in RUNS if r[0] in wanted for base in r[3]}  # baselines too
        runs = [run for run in RUNS if run[0] in wanted]
        speeds = {name: [] for name, *_ in runs}
        for _ in range(args.rounds):
            for name, arch, flags, _ in runs:
                speeds[name].append(words_per_second(data, arch, flags, args.updates or 80))
        records = [record(name, arch, speeds, baseline, args.rounds)
                   for name, arch, _, baselines in runs for baseline in baselines]
    uncached, cached = decoder_cache_ratio()
    print(f"BWN LSTMCell decoder (2x512, 50 steps, batch 32) fwd+bwd: uncached {uncached * 1e3:.0f} ms, "
          f"cached {cached * 1e3:.0f} ms, {uncached / cached:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(records, indent=1))


def bench_cuda(args):
    """--device cuda: the WMT base Transformers' steady-state words/s, ratios and peak memory."""
    if not torch.cuda.is_available():
        raise SystemExit("bench_models.py: --device cuda but torch sees no CUDA device")
    updates = args.updates or 300
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or make_data(Path(tmp))
        wanted = set(args.only or [r[0] for r in CUDA_RUNS])
        wanted |= {base for r in CUDA_RUNS if r[0] in wanted for base in r[3]}
        runs = [run for run in CUDA_RUNS if run[0] in wanted]
        speeds, memory = {name: [] for name, *_ in runs}, {}
        for _ in range(args.rounds):
            for name, arch, flags, _ in runs:
                wps, memory[name] = cuda_words_per_second(data, arch, flags, updates, Path(tmp) / name)
                speeds[name].append(wps)
        print(f"{torch.cuda.get_device_name()}, {updates} updates a run, {args.rounds} round(s)", flush=True)
        records = [record(name, arch, speeds, baseline, args.rounds)
                   for name, arch, _, baselines in runs for baseline in baselines]
    for r in records:
        r["peak_memory_gb"] = memory[r["name"]]
    print("peak GPU memory (GB): " + ", ".join(f"{name} {gb:.2f}" for name, gb in memory.items()))
    if args.json:
        Path(args.json).write_text(json.dumps(records, indent=1))


if __name__ == "__main__":
    run_main(main, "bench_models.py")
