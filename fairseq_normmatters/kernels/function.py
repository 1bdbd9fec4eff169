"""The plan and the autograd Function through which every fast norm runs.

`RowNormFunction` runs the analytic forward and backward of `rows.py` (or, accumulating in
fp16/bf16, of narrow.py), saving the input and one to three floats per row (like LayerNorm), in
one layout for every backend. A `RowNormPlan` is what a norm module decides once per (device,
dtype): the path (backends.route), its implementation and the numeric options; its `run` is a
reshape and one Function.apply.
"""

from typing import Optional, Tuple

import torch

from . import narrow
from .backends import (FLOAT32, UNCOMPILED, BackendUnavailable, FailureKey, Implementation, Path, announce,
                       failures, implementation, route, run_or_fall_back, width_class)


class RowNormPlan:
    """A norm of `kind` over rows of `size` features by `impl` (an Implementation), decided once:
    run(x, gamma, beta) is a reshape and one RowNormFunction.apply (constant: C of
    l1/linf/topk, ignored by rms and l2). accumulate: the format of the statistics ("float32",
    "fp16", "bf16"). Where `impl` fails, `fallback` (the same definition: rows.py, or the
    emulation of a narrow accumulation) runs instead and the failure is kept (backends.py)."""

    __slots__ = ("kind", "size", "constant", "eps", "k", "impl", "accumulate", "fallback", "keys")

    def __init__(self, kind: str, size: int, constant: float, eps: float, k: Optional[int], impl: Implementation,
                 accumulate: str = FLOAT32):
        self.kind, self.size, self.constant, self.eps, self.k = kind, size, float(constant), float(eps), k or 0
        self.impl, self.accumulate = impl, accumulate
        self.fallback = UNCOMPILED if accumulate == FLOAT32 else narrow.implementation("emulation", accumulate)
        self.keys = {}  # (dtype, device type) -> FailureKey: made once, not per call

    def failure_key(self, x) -> FailureKey:
        where = (x.dtype, x.device.type)
        key = self.keys.get(where)
        if key is None:
            key = self.keys[where] = FailureKey(self.impl.name, self.kind, x.dtype, width_class(self.size),
                                                x.device.type, self.accumulate)
        return key

    def run(self, x, weight, bias):
        x2d = x if x.dim() == 2 and x.shape[1] == self.size else x.reshape(-1, self.size)
        weight = weight if weight is None or weight.dim() == 1 else weight.reshape(-1)
        bias = bias if bias is None or bias.dim() == 1 else bias.reshape(-1)
        if torch.is_autocast_enabled(x.device.type):  # the kernels choose their own precision
            with torch.autocast(x.device.type, enabled=False):
                y = self.apply(x2d, weight, bias)
        else:
            y = self.apply(x2d, weight, bias)
        return y if x2d is x else y.view(x.shape)

    def apply(self, x, weight, bias):
        """RowNormFunction.apply, or the forward alone where no gradient is recorded (generation)."""
        if torch.is_grad_enabled():
            return RowNormFunction.apply(x, weight, bias, self)
        return self.forward(x, weight, bias)[0]

    def forward(self, x, weight, bias):
        return run_or_fall_back(self.impl, "forward", self.failure_key(x), self.fallback, x, weight, bias, self.kind,
                                self.constant, self.eps, self.k)

    def backward(self, grad, x, weight, statistics, needs_weight_grad, needs_bias_grad):
        return run_or_fall_back(self.impl, "backward", self.failure_key(x), self.fallback, grad, x, weight,
                                statistics, self.kind, self.constant, self.eps, self.k, needs_weight_grad,
                                needs_bias_grad)


class RowNormFunction(torch.autograd.Function):
    """A norm over the rows of a 2-D x (rows.py's formulas) as `plan` runs it, with the analytic
    backward (once differentiable: a double backward is refused)."""

    @staticmethod
    def forward(ctx, x, weight, bias, plan):
        y, statistics = plan.forward(x, weight, bias)
        ctx.save_for_backward(x, weight, statistics)
        ctx.plan = plan
        ctx.bias_dtype = None if bias is None else bias.dtype
        return y

    @staticmethod
    def backward(ctx, grad):
        if torch.is_grad_enabled():  # create_graph=True: the kernels' gradients have no graph
            raise RuntimeError("the l1/linf/topk/rms norms' fast backward is not differentiable (no double "
                               "backward); run them with the eager backend for that")
        x, weight, statistics = ctx.saved_tensors
        needs = ctx.needs_input_grad
        dx, dweight, dbias = ctx.plan.backward(grad, x, weight, statistics, needs[1], needs[2])
        if dweight is not None and dweight.dtype != weight.dtype:
            dweight = dweight.to(weight.dtype)
        if dbias is not None and dbias.dtype != ctx.bias_dtype:
            dbias = dbias.to(ctx.bias_dtype)
        return dx, dweight, dbias, None


def plan_norm(kind: str, size: int, dtype: torch.dtype, device: str, constant: float, eps: float,
              k: Optional[int], accumulate: str = FLOAT32, requested: Optional[str] = None
              ) -> Tuple[Path, Optional[RowNormPlan]]:
    """(the path of a `kind` norm over rows of `size` features of `dtype` on `device`, announced
    once in the log; its plan, or None where the path is eager: the reference formula)."""
    while True:
        path = route(kind, size, dtype, device, accumulate, requested, k)
        if path.backend == "eager":
            impl = None
            break
        try:
            impl = implementation(path.backend) if accumulate == FLOAT32 else \
                narrow.implementation(path.backend, accumulate)
            break
        except BackendUnavailable as error:  # kept: the next route takes another path
            failures.record(FailureKey(path.backend, kind, dtype, width_class(size), device, accumulate), error)
    announce(kind, size, dtype, device, accumulate, path)
    return path, impl and RowNormPlan(kind, size, constant, eps, k, impl, accumulate)


def fused_norm(x, kind, normalized_size, weight, bias, eps, constant, k, backend):
    """The `kind` norm of x over its last `normalized_size` elements by `backend`, planned for
    this one call (the functional API; norm modules keep their plans)."""
    return RowNormPlan(kind, normalized_size, constant, eps, k, implementation(backend)).run(x, weight, bias)
