"""The flags of norm_transformer / norm_lstm, their defaults, and the ones a checkpoint keeps."""

import argparse

from ...accumulation import ACCUMULATE_FORMATS, FLOAT32
from ...constants import CONSTANT_MODES, check_constant
from ...initialization import INIT_SCHEMES
from ...kinds import NORM_KINDS, NORMS
from ...weight_norm import RHO_MODES, WEIGHT_NORM_MODES

NORM_DEFAULTS = {"norm_type": "l2", "norm_topk": 8, "norm_constant": "paper", "norm_accumulate": FLOAT32}
WEIGHT_NORM_DEFAULTS = {"weight_norm": "none", "weight_norm_p": "2", "weight_norm_rho": "layer",
                        "init_scheme": "auto"}
#: The flag that sets each option a norm kind takes (kinds.NORMS[kind].options).
OPTION_FLAGS = {"constant": "norm_constant", "k": "norm_topk", "accumulate": "norm_accumulate"}


def constant_option(text: str):
    """argparse type of --norm-constant: "paper", "gaussian" or a positive float."""
    try:
        return check_constant(float(text)) if text not in CONSTANT_MODES else text
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid --norm-constant {text!r}; allowed: {', '.join(CONSTANT_MODES)} or a positive float"
        ) from None


def add_norm_args(parser) -> None:
    parser.add_argument("--norm-type", choices=NORM_KINDS,
                        help="layer norm kind replacing every LayerNorm (none removes them)")
    parser.add_argument("--norm-topk", type=int, metavar="K",
                        help="k of --norm-type topk (1 <= K <= embedding dim)")
    parser.add_argument("--norm-constant", type=constant_option, metavar="{paper,gaussian,FLOAT}",
                        help="calibration constant of l1/linf/topk")
    parser.add_argument("--norm-accumulate", choices=tuple(ACCUMULATE_FORMATS),
                        help="format in which every layer norm accumulates its statistics and normalizes "
                             "(fp16/bf16: an exact emulation of such a kernel, fairseq_normmatters.accumulation); "
                             "float32 is the fast paths' own")


def add_weight_norm_args(parser) -> None:
    parser.add_argument("--weight-norm", choices=WEIGHT_NORM_MODES,
                        help="weight normalization of every Linear/LSTM weight but the output projection")
    parser.add_argument("--weight-norm-p", choices=("1", "2", "inf"),
                        help="norm of the weight rows for --weight-norm")
    parser.add_argument("--weight-norm-rho", choices=RHO_MODES,
                        help="BWN bound: one per layer (mean initial row norm) or per row")
    parser.add_argument("--init-scheme", choices=INIT_SCHEMES,
                        help="initial weights: fairseq's own, or the authors' (PyTorch's default Linear, "
                             "embeddings U(+-1/sqrt(d)): fairseq_normmatters.initialization); auto (default): "
                             "the authors' for a Transformer without activation norms (--norm-type none, BWN), "
                             "whose loss starts 50 bits above a uniform guess with fairseq's, else fairseq's")


def add_precision_args(parser) -> None:
    parser.add_argument("--autocast-bf16", action="store_true",
                        help="train with the forward under torch.autocast(bfloat16) and float32 weights, "
                             "gradients and optimizer (fairseq's --bf16 implies --tpu); validation and "
                             "generation run in float32. Not saved with the normalization flags")


def set_defaults(args, defaults: dict) -> None:
    """Set each option of `defaults` that args lacks (or holds as None)."""
    for key, value in defaults.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)


def normalization_signature(args) -> dict:
    """The flags that decide what the model computes, as strings (irrelevant ones left out, and
    --norm-accumulate float32, what every model computed before the flag existed)."""
    weight_norm, keys = args.weight_norm, ["weight_norm"]
    if hasattr(args, "norm_type"):  # norm_transformer; norm_lstm has no layer norm, nor its flags
        keys += ["norm_type"] + [OPTION_FLAGS[option] for option in NORMS[args.norm_type].options]
    keys += ["weight_norm_p", "weight_norm_rho"] if weight_norm != "none" else []
    signature = {key: str(getattr(args, key)) for key in keys}
    if signature.get("norm_accumulate") == FLOAT32:
        del signature["norm_accumulate"]
    return signature


def norm_options(args) -> dict:
    """The options of --norm-type's kind from their flags, e.g. {"constant": "paper", "k": 8}."""
    return {option: getattr(args, OPTION_FLAGS[option]) for option in NORMS[args.norm_type].options}
