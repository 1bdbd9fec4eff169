"""Initializations for models that lose their activation norms.

fairseq's Transformer initializes for a norm after every sublayer: Xavier-uniform linear
weights (unit gain) and embeddings N(0, d^-1/2) scaled by sqrt(d) on input and tied to the
output projection. Without the norms (--norm-type none, BWN instead of layer norm), a post-norm
residual stream then grows with depth (its RMS 2.3 -> 11 over a base decoder's 6 layers) and
the tied projection gives each input token a self-logit of about sqrt(d) = 22.6 nats: a
full-size model starts 50-55 bits above a uniform guess (docs/recipes.md).

The authors trained such models from PyTorch's defaults (eladhoffer/seq2seq.pytorch: its
Linear is nn.Linear with a zero bias; embeddings tied to the output nn.Linear, so
U(+-1/sqrt(d)); input embeddings still times sqrt(d)). `authors_initialization` re-draws a
built model's weights that way:

    nn.Linear:     w ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)),  b = 0
    nn.Embedding:  e ~ U(-1/sqrt(d), 1/sqrt(d)),            the padding row 0

Each sublayer then has gain about 1/sqrt(3) per matrix, the residual RMS grows about 1.6x over
six decoder layers, and a base Transformer without norms starts within a bit of a uniform
guess, as the one with layer norms does.
"""

import math

import torch
import torch.nn as nn
from torch.nn.utils import parametrize

INIT_SCHEMES = ("auto", "fairseq", "authors")


def authors_initialization(model: nn.Module) -> int:
    """Re-draw every nn.Linear and nn.Embedding weight of `model` as the authors' code had them
    (the module docstring); returns how many weights it re-drew. A weight shared by several
    modules (embeddings tied to the output projection) is drawn once, by the first. Call it
    before weight normalization (BWN's rho is measured from the initial weights); a
    parametrized weight is refused."""
    drawn = set()
    with torch.no_grad():
        for name, module in model.named_modules():
            if not isinstance(module, (nn.Linear, nn.Embedding)):
                continue
            if parametrize.is_parametrized(module, "weight"):
                raise ValueError(f"{name}.weight is parametrized (weight norm): initialize before applying it")
            if id(module.weight) in drawn:
                continue
            if isinstance(module, nn.Linear):
                bound = 1 / math.sqrt(module.in_features)
                if module.bias is not None:
                    module.bias.zero_()
            else:
                bound = 1 / math.sqrt(module.embedding_dim)
            module.weight.uniform_(-bound, bound)
            if isinstance(module, nn.Embedding) and module.padding_idx is not None:
                module.weight[module.padding_idx].zero_()
            drawn.add(id(module.weight))
    return len(drawn)
