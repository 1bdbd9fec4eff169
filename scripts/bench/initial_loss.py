#!/usr/bin/env python3
"""Where each configuration of the WMT14 recipe starts, at its full size, on CPU in seconds.

Builds every configuration's model as fairseq-train does (its --arch and the recipe's flags,
--share-all-embeddings, a joint dictionary of V symbols), and on a batch of Zipf-distributed
tokens (seeded) prints its initial label-smoothed loss (smoothing 0.1, bits a token) beside a
uniform guess (log2 V), the logits' standard deviation, and the RMS of the decoder's residual
stream after each layer. A model more than a few bits above log2 V starts by unlearning its
initialization (fairseq_normmatters.initialization).

    python scripts/bench/initial_loss.py [--vocab 32000] [--configs transformer_l2 ...] [--init-scheme fairseq]
"""

import argparse
import math
import sys
import tempfile
from pathlib import Path
from typing import List, NamedTuple

import torch
import torch.nn.functional as F

import fairseq_normmatters
from fairseq_normmatters.recipes.common import run_main
from fairseq_normmatters.recipes.compare import DEFAULT_CONFIGS
from fairseq_normmatters.recipes.run.configs import CONFIGS

LABEL_SMOOTHING = 0.1
BATCH, LENGTH = 16, 30


class Start(NamedTuple):
    """A model's state at initialization: its label-smoothed loss and a uniform guess's (bits a
    token), the logits' standard deviation, the decoder's residual RMS after each layer."""
    loss_bits: float
    uniform_bits: float
    logit_std: float
    residual_rms: List[float]


def joint_dictionary(folder: Path, vocab: int) -> None:
    """dict.de.txt and dict.en.txt of `vocab` symbols with fairseq's 4 special ones."""
    for language in ("de", "en"):
        lines = (f"piece{i} {vocab - i}\n" for i in range(vocab - 4))
        (folder / f"dict.{language}.txt").write_text("".join(lines))


def build(config: str, data: Path, extra=()):
    """CONFIG's model (the WMT14 recipe's architecture and flags), built by fairseq as fairseq-train
    builds it, seeded."""
    from fairseq import options, tasks, utils
    fairseq_normmatters.install_fairseq_plugin()
    arch, flags, _ = CONFIGS[config]
    argv = [str(data), "--user-dir", str(Path(fairseq_normmatters.__file__).parent), "--arch", arch, "--task",
            "translation", "-s", "de", "-t", "en", "--share-all-embeddings", "--cpu", *option_pairs(flags), *extra]
    args = options.parse_args_and_arch(options.get_training_parser(), argv)
    utils.import_user_module(args)
    torch.manual_seed(1)
    return tasks.setup_task(args).build_model(args)


def option_pairs(flags) -> list:
    """The model's own flags (--norm-*, --weight-norm*) of a configuration's flags, with their values."""
    pairs = []
    for i, flag in enumerate(flags):
        if flag.startswith(("--norm-", "--weight-norm", "--init-scheme")):
            pairs += [flag, flags[i + 1]]
    return pairs


def initial_state(model, vocab: int, seed: int = 0) -> Start:
    """Start of `model` on BATCH x LENGTH Zipf tokens (source and target drawn apart)."""
    generator = torch.Generator().manual_seed(seed)
    zipf = 1.0 / torch.arange(1, vocab - 3, dtype=torch.float64)

    def tokens():
        return (torch.multinomial(zipf, BATCH * LENGTH, replacement=True, generator=generator) + 4).view(BATCH, LENGTH)
    source, target = tokens(), tokens()
    previous = torch.cat([torch.full((BATCH, 1), 2), target[:, :-1]], 1)  # eos first, as fairseq shifts
    rms = []
    transformer_layers = model.decoder.layers if hasattr(model.decoder, "embed_positions") else []  # not LSTM cells
    hooks = [layer.register_forward_hook(lambda m, i, o: rms.append(o[0].pow(2).mean().sqrt().item()))
             for layer in transformer_layers]
    model.eval()
    with torch.no_grad():
        logits = model(source, torch.full((BATCH,), LENGTH), previous)[0].float()
    for hook in hooks:
        hook.remove()
    log_probs = F.log_softmax(logits, -1)
    nll = -log_probs.gather(-1, target.unsqueeze(-1)).squeeze(-1)
    smoothed = (1 - LABEL_SMOOTHING) * nll - LABEL_SMOOTHING * log_probs.mean(-1)
    return Start(smoothed.mean().item() / math.log(2), math.log2(vocab), logits.std().item(), rms)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab", type=int, default=32000, help="joint dictionary size (default 32000)")
    parser.add_argument("--configs", nargs="+", default=list(DEFAULT_CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--init-scheme", choices=("auto", "fairseq", "authors"), default="auto")
    args = parser.parse_args(argv)
    if args.vocab < 8:
        parser.error(f"--vocab {args.vocab}: needs at least 8 symbols")
    with tempfile.TemporaryDirectory() as folder:
        joint_dictionary(Path(folder), args.vocab)
        print("| configuration | initial loss (bits) | uniform (log2 V) | logit std | decoder residual RMS by layer |")
        print("|---|---|---|---|---|")
        for config in args.configs:
            start = initial_state(build(config, Path(folder), ["--init-scheme", args.init_scheme]), args.vocab)
            rms = " ".join(f"{r:.2f}" for r in start.residual_rms) or "— (LSTM)"
            print(f"| {config} | {start.loss_bits:.2f} | {start.uniform_bits:.2f} | {start.logit_std:.2f} | {rms} |",
                  flush=True)


if __name__ == "__main__":
    run_main(main, "initial_loss.py")
