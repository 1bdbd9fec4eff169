"""The Triton norms' kernel launches recorded instead of run, and the ATen ops a call issues:
what one call costs the host, countable on a CPU (TRITON_INTERPRET=1 set before triton is
imported, CPU tensors). Shared by tests/test_call_path.py (the budget) and
scripts/bench/bench_norms.py --host-path (the time)."""

import contextlib
from typing import List

from torch.utils._python_dispatch import TorchDispatchMode

KERNELS = ("_forward_kernel", "_backward_kernel", "_parameter_grad_kernel")


class Recorder:
    """Stands for a @triton.jit kernel: `kernel[grid](...)` appends the kernel's name to `log`
    and launches nothing (the outputs keep whatever torch.empty gave them)."""

    def __init__(self, name: str, log: List[str]):
        self.name, self.log = name, log

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.log.append(self.name)
        return launch


@contextlib.contextmanager
def recorded_launches():
    """Within the block the Triton norm kernels are Recorders; yields the list of launches."""
    from fairseq_normmatters.kernels import triton_kernels
    log, saved = [], {name: getattr(triton_kernels, name) for name in KERNELS if hasattr(triton_kernels, name)}
    for name in saved:  # (a tree before _parameter_grad_kernel has two: compared by bench_norms --host-path)
        setattr(triton_kernels, name, Recorder(name, log))
    try:
        yield log
    finally:
        for name, kernel in saved.items():
            setattr(triton_kernels, name, kernel)


class OpCounter(TorchDispatchMode):
    """The ATen ops issued within the block, by name (autograd's own detach of a leaf's
    gradient left out: every autograd.Function pays it)."""

    def __init__(self):
        super().__init__()
        self.ops: List[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name != "detach":
            self.ops.append(name)
        return func(*args, **(kwargs or {}))
