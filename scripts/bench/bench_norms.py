#!/usr/bin/env python3
"""Forward+backward speed of the plugin's layer norms as ratios to torch.nn.LayerNorm, one run.

For each dtype and shape (rows x features) it times nn.LayerNorm and each kind (l1, linf,
topk k=8, rms, and l2 by the package's own kernels: the same Triton template as l1 and linf on
CUDA, so that l1 / l2 there compares norms, not engineering) on the same input and output
gradient, in rounds that time each of them on a few single calls (the round's value is their
median, so a call that the machine interrupts does not count; each round starts with the next
one, so none always follows LayerNorm):
median ms of fwd+bwd, the ratio to LayerNorm (the median of the ratios within a round; JSON:
round_ratios), the first call's extra time (compilation) separately, and on CUDA the peak-memory
ratio and the achieved GB/s (5 passes over the tensor: read x, write y, read x and dy, write
dx) beside torch's copy bandwidth. On CUDA each single call is timed between two
torch.cuda.synchronize() (the "host" figure: the launch path and the kernels) and, in the same
rounds, the same calls launched back to back between two CUDA events, as
triton.testing.do_bench times (the "kernel" figure: the GPU's time per call once the host
keeps ahead; JSON: kernel_ms, layernorm_kernel_ms, kernel_ratio). Where host is well above
kernel, the launch path is what to make faster. Where the host path is as slow as the kernels,
back-to-back timing shows the host, not the kernels: so each call is also timed queued behind
torch.cuda._sleep, long enough that the GPU never waits for the host (Timer.queued): CUDA events
after the sleep give the kernels' own time and GB/s, the host's loop the launch path's own
time, printed beside the whole call's (JSON: queued_kernel_ms, host_ms, kernel_gbps and
LayerNorm's). --overhead times a tiny input (8x512), where the kernels
take a few microseconds, and prints microseconds: the cost of each call's Python and launches.

    python scripts/bench/bench_norms.py [--device cpu|cuda] [--quick | --overhead] [--backend auto]
                                  [--host-path] [--kinds ...] [--shapes 64x512 ...] [--dtypes ...] [--topk-k 8]
                                  [--max-warps 16] [--threads N] [--kernels-only] [--json FILE]
"""

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

from fairseq_normmatters import build_norm, kernels
from fairseq_normmatters.norms import PlannedRowNorm, init_affine
from fairseq_normmatters.recipes.common import run_main

KINDS = {"l1": {}, "linf": {}, "topk": {"k": 8}, "rms": {}, "l2": {}}  # l2: TemplateL2, not nn.LayerNorm
SHAPES = [(4096, 512), (4096, 1024), (16384, 512), (16384, 1024)]
CUDA_SHAPES = SHAPES + [(65536, 1024)]
OVERHEAD_SHAPE = (8, 512)
DTYPES = {"cpu": ["float32", "bfloat16"], "cuda": ["float32", "bfloat16", "float16"]}


class Timer:
    def __init__(self, device):
        self.cuda = device == "cuda"

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize()

    def back_to_back(self, step, calls):
        """CUDA: seconds per call of `calls` calls of step() launched without waiting, between
        two CUDA events recorded on the stream (None on CPU)."""
        if not self.cuda:
            return None
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        for _ in range(calls):
            step()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3 / calls

    def queued(self, step, calls):
        """CUDA: (kernel, host) seconds per call of `calls` calls of step() queued behind a
        torch.cuda._sleep that keeps the GPU busy until the host has launched them all: CUDA
        events after the sleep time the kernels alone (the GPU never waits for the host), the
        host's loop its launch path alone. The sleep doubles until it outlasts the host's loop;
        a step that waits for the GPU (a synchronization inside) gives (None, host). CPU: (None, None)."""
        if not self.cuda:
            return None, None
        cycles = getattr(self, "sleep_cycles", 10 ** 7)
        while cycles <= 2 ** 34:
            before, start, end = (torch.cuda.Event(enable_timing=True) for _ in range(3))
            torch.cuda.synchronize()
            before.record()
            torch.cuda._sleep(cycles)
            start.record()
            began = time.perf_counter()
            for _ in range(calls):
                step()
            host = (time.perf_counter() - began) / calls
            end.record()
            end.synchronize()
            if before.elapsed_time(start) / 1e3 > 1.2 * host * calls:  # the sleep outlasted the launches
                self.sleep_cycles = cycles
                return start.elapsed_time(end) / 1e3 / calls, host
            cycles *= 2
        return None, host

    def seconds(self, step, calls=1):
        """The median time of `calls` single calls of step()."""
        times = []
        for _ in range(calls):
            self.sync()
            start = time.perf_counter()
            step()
            self.sync()
            times.append(time.perf_counter() - start)
        return statistics.median(times)


class TemplateL2(PlannedRowNorm):
    """The l2 layer norm by the package's kernels, not ATen's: gamma * d / sqrt(mean(d^2) + eps) +
    beta, its path planned once per (device, dtype) as every norm module's (the Triton template
    of l1/linf on CUDA); the eager path is rows.py's analytic l2."""

    kind, constant_value, k = "l2", 1.0, None

    def __init__(self, features):
        super().__init__()
        self.normalized_shape, self.eps, self.elementwise_affine = (features,), 1e-5, True
        self.accumulate = "float32"
        init_affine(self, True)

    def reference(self, x):
        return kernels.RowNormPlan("l2", x.shape[-1], 1.0, self.eps, None, kernels.UNCOMPILED).run(
            x, self.weight, self.bias)


def build(kind, features):
    return TemplateL2(features) if kind == "l2" else build_norm(kind, features, **KINDS[kind])


def fwd_bwd(module, x, grad):
    def step():
        x.grad = None
        module(x).backward(grad)
    return step


def peak_bytes(step, device):
    if device != "cuda":
        return None
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    step()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


def kernel_steps(modules, x, grad):
    """fwd+bwd of each kind's backend functions (kernels.Implementation) called directly, and of
    aten's native_layer_norm and its backward: the kernels without the modules and autograd."""
    x = x.detach()
    layer_norm = modules["layernorm"]
    weight, bias, shape = layer_norm.weight.detach(), layer_norm.bias.detach(), [x.shape[-1]]

    def layer_norm_step():
        _, mean, rstd = torch.ops.aten.native_layer_norm(x, shape, weight, bias, 1e-5)
        torch.ops.aten.native_layer_norm_backward(grad, x, shape, mean, rstd, weight, bias, [True] * 3)

    def kind_step(kind, module):
        k, constant = KINDS[kind].get("k", 0), getattr(module, "constant_value", 1.0)  # rms: none
        backend = kernels.backend_for(x, kind=kind)
        if backend == "eager":
            raise SystemExit("bench_norms.py: --kernels-only times a fast backend; here the "
                             f"{kind} norm runs eager")
        impl, w, b = kernels.implementation(backend), module.weight.detach(), module.bias.detach()

        def step():
            _, saved = impl.forward(x, w, b, kind, constant, module.eps, k)
            impl.backward(grad, x, w, saved, kind, constant, module.eps, k, True, True)
        return step
    return {name: layer_norm_step if name == "layernorm" else kind_step(name, m)
            for name, m in modules.items()}


def bench_shape(kinds, rows, features, dtype, device, repeats, inner, kernels_only=False):
    """Records for each kind at one shape; LayerNorm and the kinds are timed in alternation."""
    timer = Timer(device)
    x = torch.randn(rows, features, device=device, dtype=dtype, requires_grad=True)
    grad = torch.randn(rows, features, device=device, dtype=dtype)
    modules = {"layernorm": torch.nn.LayerNorm(features)}
    modules.update({kind: build(kind, features) for kind in kinds})
    modules = {name: m.to(device=device, dtype=dtype) for name, m in modules.items()}
    steps = (kernel_steps(modules, x, grad) if kernels_only
             else {name: fwd_bwd(m, x, grad) for name, m in modules.items()})
    first = {name: timer.seconds(step) for name, step in steps.items()}
    times = {name: [] for name in steps}
    kernel_times = {name: [] for name in steps}  # CUDA: back to back, between events
    queued = {name: [] for name in steps}  # CUDA: (kernel, host) behind a sleep (Timer.queued)
    names = list(steps)
    for round_ in range(repeats):
        for name in names[round_ % len(names):] + names[:round_ % len(names)]:
            times[name].append(timer.seconds(steps[name], inner))
            kernel_times[name].append(timer.back_to_back(steps[name], inner))
            queued[name].append(timer.queued(steps[name], inner))
    ms = {name: 1e3 * statistics.median(t) for name, t in times.items()}
    # a ratio within a round cancels the drift of a shared machine between rounds
    round_ratios = {kind: [a / b for a, b in zip(times[kind], times["layernorm"])] for kind in kinds}
    kernel = {name: median_or_none(t, 1e3) for name, t in kernel_times.items()}
    kernel_ratios = {kind: median_or_none([None if b is None else a / b
                                           for a, b in zip(kernel_times[kind], kernel_times["layernorm"])])
                     for kind in kinds}
    peaks = {name: peak_bytes(step, device) for name, step in steps.items()}
    copy_gbps = copy_bandwidth(x, timer, inner) if device == "cuda" else None
    moved = 5 * x.numel() * x.element_size()
    return [{"kind": kind, "device": device, "dtype": str(dtype).replace("torch.", ""),
             "shape": [rows, features], "ms": ms[kind], "layernorm_ms": ms["layernorm"],
             "ratio": statistics.median(round_ratios[kind]), "round_ratios": round_ratios[kind],
             "compile_s": first[kind] - ms[kind] / 1e3,
             "kernel_ms": kernel[kind], "layernorm_kernel_ms": kernel["layernorm"], "kernel_ratio": kernel_ratios[kind],
             **queued_figures(queued[kind], queued["layernorm"], x),
             "backend": backend_label(kind, x), "scope": "kernels" if kernels_only else "module",
             "peak_memory_ratio": peaks[kind] / peaks["layernorm"] if peaks[kind] else None,
             "gbps": moved / ms[kind] / 1e6 if device == "cuda" else None,
             "layernorm_gbps": moved / ms["layernorm"] / 1e6 if device == "cuda" else None,
             "copy_gbps": copy_gbps}
            for kind in kinds]


def queued_figures(ours, layer_norm, x) -> dict:
    """The records' queued figures (ms): each call's kernels alone and its host path alone, for
    the kind and LayerNorm, and the kernels' GB/s (5 passes over x) beside LayerNorm's."""
    def median_of(pairs, index):
        values = [pair[index] for pair in pairs if pair[index] is not None]
        return 1e3 * statistics.median(values) if values else None
    figures = {"queued_kernel_ms": median_of(ours, 0), "host_ms": median_of(ours, 1),
               "layernorm_queued_kernel_ms": median_of(layer_norm, 0), "layernorm_host_ms": median_of(layer_norm, 1)}
    moved = 5 * x.numel() * x.element_size()
    figures["kernel_gbps"] = moved / figures["queued_kernel_ms"] / 1e6 if figures["queued_kernel_ms"] else None
    figures["layernorm_kernel_gbps"] = (moved / figures["layernorm_queued_kernel_ms"] / 1e6
                                        if figures["layernorm_queued_kernel_ms"] else None)
    return figures


def median_or_none(values, scale=1.0):
    """scale x the median of values, or None where they are None (the back-to-back times on CPU)."""
    return None if not values or values[0] is None else scale * statistics.median(values)


class Identity(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad


def function_floor(device, timer, repeats, inner) -> float:
    """Seconds of fwd+bwd of an autograd.Function that does nothing: what any Python Function
    costs per call, whatever its kernels."""
    x = torch.randn(*OVERHEAD_SHAPE, device=device, requires_grad=True)
    grad = torch.randn(*OVERHEAD_SHAPE, device=device)

    def step():
        x.grad = None
        Identity.apply(x).backward(grad)
    timer.seconds(step, inner)
    return statistics.median(timer.seconds(step, inner) for _ in range(repeats))


def host_path(kinds, repeats, inner):
    """--host-path: microseconds of fwd+bwd at OVERHEAD_SHAPE of each kind's Triton call path on
    CPU tensors with the launches recorded, not run; LayerNorm's and the identity Function's."""
    from launch_recorder import recorded_launches
    timer, (rows, features) = Timer("cpu"), OVERHEAD_SHAPE
    x = torch.randn(rows, features, requires_grad=True)
    grad = torch.randn(rows, features)
    layer_norm = torch.nn.LayerNorm(features)

    def timed(run):
        def step():
            x.grad = None
            run().backward(grad)
        timer.seconds(step, inner)
        return statistics.median(timer.seconds(step, inner) for _ in range(repeats))
    base = timed(lambda: layer_norm(x))
    print(f"host path of one fwd+bwd at {rows}x{features}, launches recorded (CPU): LayerNorm's whole fwd+bwd "
          f"{1e6 * base:.1f} us, an identity autograd.Function {1e6 * function_floor('cpu', timer, repeats, inner):.1f} us")
    with recorded_launches():
        for kind in kinds:
            norm = build(kind, features)
            plan = kernels.RowNormPlan(kind, features, getattr(norm, "constant_value", 1.0), 1e-5,
                                       KINDS[kind].get("k"), kernels.implementation("triton"))
            seconds = timed(lambda: plan.run(x, norm.weight, norm.bias))
            print(f"{kind:5s} {1e6 * seconds:7.1f} us  ({seconds / base:.2f}x LayerNorm's whole call)")


def backend_label(kind, x):
    return kernels.backend_for(x, kind=kind) if kind != "layernorm" else "torch"


def copy_bandwidth(x, timer, inner):
    out = torch.empty_like(x)
    out.copy_(x)
    seconds = statistics.median(timer.seconds(lambda: out.copy_(x), inner) for _ in range(5))
    return 2 * x.numel() * x.element_size() / seconds / 1e9


def print_record(r):
    if r["shape"][0] * r["shape"][1] <= OVERHEAD_SHAPE[0] * OVERHEAD_SHAPE[1]:
        print(f"{r['kind']:5s} {r['dtype']:8s} {r['shape'][0]:6d}x{r['shape'][1]:<5d} "
              f"{1e3 * r['ms']:7.1f} us  LayerNorm {1e3 * r['layernorm_ms']:7.1f} us  "
              f"{1e3 * (r['ms'] - r['layernorm_ms']):+7.1f} us  ratio {r['ratio']:5.2f}x  [{r['backend']}]"
              + (f"  back to back {1e3 * r['kernel_ms']:7.1f} us (LayerNorm {1e3 * r['layernorm_kernel_ms']:.1f})"
                 if r["kernel_ms"] is not None else ""), flush=True)
        return
    line = (f"{r['kind']:5s} {r['dtype']:8s} {r['shape'][0]:6d}x{r['shape'][1]:<5d} "
            f"{r['ms']:9.3f} ms  LayerNorm {r['layernorm_ms']:9.3f} ms  ratio {r['ratio']:5.2f}x  "
            f"first call +{r['compile_s']:6.2f} s  [{r['backend']}{', kernels only' if r['scope'] == 'kernels' else ''}]")
    if r["gbps"] is not None:
        line += (f"  {r['gbps']:6.0f} GB/s (LayerNorm {r['layernorm_gbps']:.0f}, copy {r['copy_gbps']:.0f})"
                 f"  peak mem {r['peak_memory_ratio']:.2f}x")
    if r["kernel_ms"] is not None:
        line += (f"\n      back to back (CUDA events): {r['kernel_ms']:9.3f} ms  LayerNorm "
                 f"{r['layernorm_kernel_ms']:9.3f} ms  ratio {r['kernel_ratio']:5.2f}x  "
                 f"(host/kernel {r['ms'] / r['kernel_ms']:.1f}x)")
    if r.get("queued_kernel_ms") is not None:
        line += (f"\n      whole call {r['ms']:9.3f} ms = host {r['host_ms']:9.3f} ms | kernels {r['queued_kernel_ms']:9.3f} "
                 f"ms ({r['kernel_gbps']:.0f} GB/s); LayerNorm host {r['layernorm_host_ms']:9.3f} ms | kernels "
                 f"{r['layernorm_queued_kernel_ms']:9.3f} ms ({r['layernorm_kernel_gbps']:.0f} GB/s)")
    print(line, flush=True)


def shape_argument(text: str):
    """"ROWSxFEATURES" -> (rows, features), both positive."""
    try:
        rows, features = (int(part) for part in text.lower().split("x"))
    except ValueError:
        rows = features = 0
    if rows < 1 or features < 1:
        raise argparse.ArgumentTypeError(f"shape {text!r} is not ROWSxFEATURES with positive "
                                         "integers, e.g. 4096x512")
    return rows, features


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="one small shape, fp32 (< 60 s on 2 cores)")
    mode.add_argument("--overhead", action="store_true",
                      help="the per-call cost in microseconds: fwd+bwd of 8x512, many calls")
    mode.add_argument("--host-path", action="store_true",
                      help="CPU: the Triton call path's host cost at 8x512 with its launches recorded, not run, "
                           "beside LayerNorm's fwd+bwd and an identity autograd.Function")
    parser.add_argument("--backend", choices=kernels.BACKENDS,
                        help=f"norm backend of l1/linf/topk (default: ${kernels.BACKEND_VARIABLE} or auto)")
    parser.add_argument("--kinds", nargs="+", choices=tuple(KINDS), default=list(KINDS))
    parser.add_argument("--shapes", nargs="+", type=shape_argument, metavar="ROWSxFEATURES",
                        help="shapes instead of the default list (e.g. 64x512 4096x512)")
    parser.add_argument("--dtypes", nargs="+", choices=DTYPES["cuda"],
                        help="dtypes instead of the device's default list")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads(N) first (CPU)")
    parser.add_argument("--topk-k", type=int, default=8, help="top-k's k (default 8; the Triton kernels take "
                                                              "up to 64, unrolling a loop over k)")
    parser.add_argument("--max-warps", type=int, choices=(4, 8, 16, 32),
                        help="CUDA: the most warps a Triton program of a wide row gets (default 16)")
    parser.add_argument("--kernels-only", action="store_true",
                        help="time each backend's forward/backward functions and aten's layer norm "
                             "ops directly, without the modules and autograd around them")
    parser.add_argument("--json", help="write the records to this file")
    args = parser.parse_args(argv)
    if args.host_path and args.device != "cpu":
        raise SystemExit("bench_norms.py: --host-path records the launches on CPU tensors: use --device cpu")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench_norms.py: --device cuda but torch sees no CUDA device")
    if args.backend:
        kernels.set_backend(args.backend)
    KINDS["topk"]["k"] = args.topk_k
    if args.max_warps:
        from fairseq_normmatters.kernels import triton_kernels
        triton_kernels.MAX_WARPS = args.max_warps
    if args.threads is not None:
        if args.threads < 1:
            raise SystemExit(f"bench_norms.py: --threads {args.threads}: needs at least 1")
        torch.set_num_threads(args.threads)
    if args.host_path:
        return host_path(args.kinds, 30, 51)
    shapes = args.shapes or ([(4096, 512)] if args.quick else [OVERHEAD_SHAPE] if args.overhead
                             else CUDA_SHAPES if args.device == "cuda" else SHAPES)
    dtypes = args.dtypes or (["float32"] if args.quick else DTYPES[args.device])
    repeats, inner = (5, 3) if args.quick else (30, 51) if args.overhead else (15, 5)
    print(f"torch {torch.__version__}, {args.device}, threads {torch.get_num_threads()}, "
          f"{os.cpu_count()} cores" + (f", {torch.cuda.get_device_name()}" if args.device == "cuda" else ""))
    records = []
    for dtype in dtypes:
        for rows, features in shapes:
            for record in bench_shape(args.kinds, rows, features, getattr(torch, dtype), args.device,
                                      repeats, inner, args.kernels_only):
                print_record(record)
                records.append(record)
    if args.overhead and not args.kernels_only:
        print(f"floor: an identity torch.autograd.Function, fwd+bwd at {OVERHEAD_SHAPE[0]}x{OVERHEAD_SHAPE[1]}: "
              f"{1e6 * function_floor(args.device, Timer(args.device), repeats, inner):.1f} us")
    worst = max(records, key=lambda r: r["ratio"])
    print(f"worst ratio {worst['ratio']:.2f}x: {worst['kind']} {worst['dtype']} {worst['shape']}")
    if args.json:
        Path(args.json).write_text(json.dumps(records, indent=1))


if __name__ == "__main__":
    run_main(main, "bench_norms.py")
