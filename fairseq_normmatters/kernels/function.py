"""The plan and the autograd Function through which every fast norm runs.

`RowNormFunction` runs the analytic forward and backward of `rows.py`, saving the input and
one to three floats per row (like LayerNorm), in one layout for every backend. A `RowNormPlan`
is what a norm module decides once per (device, dtype): the backend's implementation and the
numeric options; its `run` is a reshape and one Function.apply.
"""

from typing import Optional

import torch

from .backends import Implementation, _mark_broken, implementation, run_or_fall_back


class RowNormPlan:
    """A norm of `kind` over rows of `size` features by `impl` (an Implementation), decided once:
    run(x, gamma, beta) is a reshape and one RowNormFunction.apply (constant: C of
    l1/linf/topk, ignored by rms)."""

    __slots__ = ("kind", "size", "constant", "eps", "k", "impl")

    def __init__(self, kind: str, size: int, constant: float, eps: float, k: Optional[int], impl: Implementation):
        self.kind, self.size, self.constant, self.eps, self.k = kind, size, float(constant), float(eps), k or 0
        self.impl = impl

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
        return run_or_fall_back(self.impl, "forward", x, weight, bias, self.kind, self.constant, self.eps, self.k)

    def backward(self, grad, x, weight, statistics, needs_weight_grad, needs_bias_grad):
        return run_or_fall_back(self.impl, "backward", grad, x, weight, statistics, self.kind, self.constant,
                                self.eps, self.k, needs_weight_grad, needs_bias_grad)


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


def fused_norm(x, kind, normalized_size, weight, bias, eps, constant, k, backend):
    """The `kind` norm of x over its last `normalized_size` elements by `backend`, planned for
    this one call (the functional API; norm modules keep their plans)."""
    return RowNormPlan(kind, normalized_size, constant, eps, k, implementation(backend)).run(x, weight, bias)


class NarrowTritonPlan(RowNormPlan):
    """A plan whose forward is the Triton kernel accumulating in fp16/bf16 (triton_narrow.py) and
    whose backward is the float32 analytic one at its statistics. No fallback inside: rows.py
    would accumulate in float32 (accumulating_norm falls back to the emulation instead)."""

    __slots__ = ("accumulate",)

    def __init__(self, kind: str, size: int, constant: float, eps: float, k: Optional[int], accumulate: str):
        super().__init__(kind, size, constant, eps, k, None)
        self.accumulate = accumulate

    def forward(self, x, weight, bias):
        from . import triton_narrow
        return triton_narrow.forward_rows(x, weight, bias, self.kind, self.constant, self.eps, self.k, self.accumulate)

    def backward(self, grad, x, weight, statistics, needs_weight_grad, needs_bias_grad):
        from . import triton_narrow
        return triton_narrow.backward_rows(grad, x, weight, statistics, self.kind, self.constant, self.eps, self.k,
                                           needs_weight_grad, needs_bias_grad, self.accumulate)


def accumulating_norm(x, kind, size, weight, bias, eps, constant, k, accumulate, emulate):
    """The `kind` norm of x accumulating in `accumulate`: by the Triton kernel where
    backends.narrow_backend(x) says so, else (or once the kernel has failed here: one warning,
    and the kernels are skipped from then on) by `emulate()`, the CPU emulation."""
    from .backends import TRITON_MAX_FEATURES, narrow_backend
    if narrow_backend(x) == "triton" and size <= TRITON_MAX_FEATURES:
        try:
            return NarrowTritonPlan(kind, size, constant, eps, k, accumulate).run(x, weight, bias)
        except torch.OutOfMemoryError:
            raise
        except Exception as error:
            failure = f"{type(error).__name__}: {error}"
        result = emulate()  # outside the except: an error of the input itself is raised unchained
        _mark_broken("triton", failure)
        return result
    return emulate()
