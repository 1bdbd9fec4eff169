"""Let torch.load(weights_only=True) read fairseq checkpoints, and nothing more.

A fairseq checkpoint pickles its training options as an argparse.Namespace, the one global
outside torch's weights-only allow-list that fairseq needs. Importing the plugin registers
exactly that class; every other global is still refused by torch.
"""

import argparse

import torch

FAIRSEQ_CHECKPOINT_GLOBALS = (argparse.Namespace,)


def allow_fairseq_checkpoints() -> None:
    """Add argparse.Namespace to torch's weights-only allow-list (idempotent)."""
    torch.serialization.add_safe_globals(list(FAIRSEQ_CHECKPOINT_GLOBALS))
