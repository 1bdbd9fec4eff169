"""What one forward and backward of each norm issues on the Triton path, against a stated
budget: kernel launches (the kernels replaced by recorders) and ATen ops from Python
(TorchDispatchMode), on CPU tensors under Triton's interpreter. ATen's LayerNorm launches 1
kernel forward and 2 backward, from C++; the budget here is the same launches, and no op but
the allocation of each output."""

import pytest
import torch

from fairseq_normmatters import kernels
from launch_recorder import OpCounter, recorded_launches

pytest.importorskip("fairseq_normmatters.kernels.triton_kernels", reason="Triton is not installed")

#: per fwd+bwd: the forward allocates y and the statistics (one buffer) and launches once; the
#: backward allocates dx, the partial sums (one buffer), dgamma and dbeta, and launches twice
#: (the rows, then dgamma/dbeta added up in the parameters' dtype: no sum or cast after)
BUDGET = {"forward": (["_forward_kernel"], ["empty", "empty"]),
          "backward": (["_backward_kernel", "_parameter_grad_kernel"], ["empty"] * 4)}


@pytest.mark.parametrize("kind", ["l1", "linf", "topk", "rms", "l2"])
@pytest.mark.parametrize("dtypes", [(torch.float32, torch.float32), (torch.float16, torch.float32),
                                    (torch.float16, torch.float16)],
                         ids=["float32", "fp16 activations (amp)", "fp16 weights (--fp16)"])
def test_one_call_launches_and_issues_no_more_than_its_budget(kind, dtypes):
    activation, parameter = dtypes
    plan = kernels.RowNormPlan(kind, 512, 1.25, 1e-5, 8 if kind == "topk" else 0, kernels.implementation("triton"))
    x = torch.randn(64, 512, dtype=activation, requires_grad=True)
    weight = torch.ones(512, dtype=parameter, requires_grad=True)
    bias = torch.zeros(512, dtype=parameter, requires_grad=True)
    with recorded_launches() as launches:
        with OpCounter() as forward:
            y = plan.run(x, weight, bias)
        assert (launches, forward.ops) == BUDGET["forward"]
        launches.clear()
        grad = torch.ones_like(y)
        with OpCounter() as backward:
            y.backward(grad)
        assert (launches, backward.ops) == BUDGET["backward"]
    assert weight.grad.dtype == parameter and bias.grad.dtype == parameter and x.grad.dtype == activation


def test_a_parameter_grad_not_asked_for_is_neither_allocated_nor_added_up():
    plan = kernels.RowNormPlan("l1", 512, 1.25, 1e-5, 0, kernels.implementation("triton"))
    x = torch.randn(64, 512, requires_grad=True)
    weight, bias = torch.ones(512), torch.zeros(512)  # frozen
    with recorded_launches() as launches:
        y = plan.run(x, weight, bias)
        launches.clear()
        grad = torch.ones_like(y)
        with OpCounter() as backward:
            y.backward(grad)
    assert launches == ["_backward_kernel"] and backward.ops == ["empty", "empty"]
