"""Apply --norm-type and --weight-norm to a model fairseq has built."""

import logging

from ...accumulation import FLOAT32
from ...convert import cache_weights_per_forward, replace_layer_norms
from ...initialization import authors_initialization
from ...weight_norm import DEFAULT_TYPES, apply_weight_norm
from .flags import norm_options

logger = logging.getLogger(__name__)

#: The vocabulary projections (tied to the embeddings when shared) keep plain weights.
OUTPUT_PROJECTIONS = ("output_projection", "fc_out")


def weight_norm_target(name: str, module) -> bool:
    """Every Linear / LSTM / LSTMCell / Conv except the vocabulary projection."""
    return isinstance(module, DEFAULT_TYPES) and name.rsplit(".", 1)[-1] not in OUTPUT_PROJECTIONS


def initialization_of(args) -> str:
    """The initialization --init-scheme asks for: auto is the authors' for a model whose
    --norm-type is none (a Transformer without activation norms, BWN's included), else
    fairseq's (the LSTMs, which have no layer norm to lose, start near a uniform guess with it)."""
    scheme = getattr(args, "init_scheme", "auto") or "auto"
    if scheme == "auto":
        return "authors" if getattr(args, "norm_type", None) == "none" else "fairseq"
    return scheme


def normalize_model(model, args):
    """Apply --norm-type and --norm-accumulate (if the model has them), --init-scheme and
    --weight-norm to a built fairseq model, in that order (BWN's rho is measured from the
    initial weights)."""
    norm_type, accumulate = getattr(args, "norm_type", "l2"), getattr(args, "norm_accumulate", FLOAT32)
    if norm_type == "none" and accumulate != FLOAT32:
        raise ValueError(f"--norm-accumulate {accumulate}: --norm-type none leaves no layer norm to accumulate "
                         "in it; leave --norm-accumulate out")
    if norm_type != "l2" or accumulate != FLOAT32:
        try:
            count = replace_layer_norms(model, args.norm_type, **norm_options(args))
        except ValueError as error:
            raise ValueError(f"--norm-type {args.norm_type} --norm-topk {args.norm_topk} --norm-constant "
                             f"{args.norm_constant} --norm-accumulate {args.norm_accumulate}: {error}") from None
        logger.info("replaced %d layer norms by %s (accumulating in %s)", count, args.norm_type,
                    args.norm_accumulate)
    else:
        kept = [f"{type(m).__module__}.{type(m).__name__}" for m in model.modules() if "LayerNorm" in type(m).__name__]
        if kept:
            logger.info("norm path: kept fairseq's %d layer norms (%s)", len(kept), ", ".join(sorted(set(kept))))
    if initialization_of(args) == "authors":
        count = authors_initialization(model)
        logger.info("initialization: the authors' (PyTorch's default Linear, embeddings U(+-1/sqrt(d))) for %d "
                    "weights", count)
    if args.weight_norm != "none":
        names = apply_weight_norm(model, args.weight_norm, p=args.weight_norm_p,
                                  rho=args.weight_norm_rho, include=weight_norm_target)
        logger.info("%s (p=%s) on %d weights", args.weight_norm, args.weight_norm_p, len(names))
        decoder = getattr(model, "decoder", None)
        if decoder is not None:
            cache_weights_per_forward(decoder)
    return model
