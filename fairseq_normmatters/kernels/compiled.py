"""The "compiled" backend: rows.py's forward and backward through torch.compile (inductor:
C++ on CPU, Triton on CUDA), one graph per feature size and dtype for any number of rows, so
that fairseq's varying batches do not recompile."""

from typing import Callable

import torch

from . import rows

#: Each kind x dtype x affine x feature size is its own graph: torch's default of 8 graphs per
#: function is raised while these functions run (not for the rest of the process); past it torch
#: runs the function uncompiled and logs a warning.
RECOMPILE_LIMIT = 64


def compile_for_any_rows(function: Callable, row_dims: dict) -> Callable:
    """function compiled for a fixed feature size and any number of rows (row_dims: argument
    position -> the dimension that counts rows). The feature size stays static, so that each
    size gets code specialised to it."""
    compiled = torch.compile(function, dynamic=False, fullgraph=True)

    def run(*args):
        for position, dim in row_dims.items():
            torch._dynamo.maybe_mark_dynamic(args[position], dim)
        with torch._dynamo.config.patch(recompile_limit=max(torch._dynamo.config.recompile_limit,
                                                            RECOMPILE_LIMIT)):
            return compiled(*args)
    return run


# forward_rows(x, ...); backward_rows(grad, x, weight, statistics (count, rows), ...)
forward_rows = compile_for_any_rows(rows.forward_rows, {0: 0})
backward_rows = compile_for_any_rows(rows.backward_rows, {0: 0, 1: 0, 3: 1})
