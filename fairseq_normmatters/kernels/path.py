"""Print the path a norm would take here, and why:

    python -m fairseq_normmatters.kernels.path --kind l1 --shape 4096x1024 --dtype fp16 --device cuda
    python -m fairseq_normmatters.kernels.path --kind topk --k 8 --shape 8x512 --accumulate fp16

(--backend or $NORMMATTERS_NORM_BACKEND as a run would set it.) It decides as a norm module
does (backends.route), in this process: failures of earlier runs are not seen; those are
warned in the run's own log, as is the path each of its norms takes.
"""

import argparse
import math
import sys

import torch

from ..accumulation import ACCUMULATE_FORMATS
from ..kinds import NORM_KINDS, build_norm
from .backends import BACKENDS, LAYER_NORM_PATH, route

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "fp16": torch.float16, "float16": torch.float16,
          "bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "float64": torch.float64}


def parse_shape(text: str) -> tuple:
    try:
        shape = tuple(int(part) for part in text.lower().split("x"))
    except ValueError:
        shape = ()
    if not shape or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"--shape {text!r}: give positive sizes like 4096x1024 (rows x features)")
    return shape


def describe(kind: str, shape: tuple, dtype: str, device: str, accumulate: str, backend, k) -> str:
    """One line: the norm, and the path route() gives it."""
    if kind == "none":
        return "none: no norm (nn.Identity)"
    width = shape[-1]
    if kind == "l2" and accumulate == "float32":
        path = LAYER_NORM_PATH
    else:
        path = route(kind, width, DTYPES[dtype], device, accumulate, backend, k)
    rows = math.prod(shape[:-1])
    return (f"{kind} over {width} features ({rows} rows), {dtype} on {device}, accumulating in {accumulate}: "
            f"{path}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fairseq_normmatters.kernels.path", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kind", choices=NORM_KINDS, required=True)
    parser.add_argument("--shape", type=parse_shape, default=(1, 512), help="ROWSxFEATURES (default 1x512)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="a device type: cpu, cuda, ... (default: cuda where there is one)")
    parser.add_argument("--accumulate", choices=tuple(ACCUMULATE_FORMATS), default="float32")
    parser.add_argument("--backend", choices=BACKENDS, default=None, help="as $NORMMATTERS_NORM_BACKEND")
    parser.add_argument("--k", type=int, default=None, help="top-k's k")
    args = parser.parse_args(argv)
    try:
        args.device = torch.device(args.device).type  # cuda:7 decides as cuda
    except RuntimeError:
        parser.error(f"--device {args.device!r} is not a device torch knows; give cpu, cuda, ...")
    if args.kind == "topk" and not (args.k and 1 <= args.k <= args.shape[-1]):
        parser.error(f"--kind topk needs --k between 1 and the {args.shape[-1]} features; got {args.k}")
    try:  # the norm a module would build (on the meta device: no memory), refused as build_norm refuses it
        with torch.device("meta"):
            build_norm(args.kind, args.shape[-1], accumulate=args.accumulate,
                       **({"k": args.k} if args.kind == "topk" else {}))
    except ValueError as error:
        parser.error(str(error))
    print(describe(args.kind, args.shape, args.dtype, args.device, args.accumulate, args.backend, args.k))
    return 0


if __name__ == "__main__":
    sys.exit(main())
