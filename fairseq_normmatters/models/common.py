"""What norm_transformer and norm_lstm share: the flags, the model surgery, the registration."""

import argparse
import hashlib
import logging
import os

import torch
from fairseq.models import ARCH_MODEL_REGISTRY, MODEL_REGISTRY, register_model, register_model_architecture

from ..constants import CONSTANT_MODES, check_constant
from ..convert import cache_weights_per_forward, replace_layer_norms
from ..norms import NORM_KINDS, SCALE_FUNCTIONS
from ..weight_norm import DEFAULT_TYPES, RHO_MODES, WEIGHT_NORM_MODES, apply_weight_norm

logger = logging.getLogger(__name__)

#: The vocabulary projections (tied to the embeddings when shared) keep plain weights.
OUTPUT_PROJECTIONS = ("output_projection", "fc_out")

NORM_DEFAULTS = {"norm_type": "l2", "norm_topk": 8, "norm_constant": "paper"}
WEIGHT_NORM_DEFAULTS = {"weight_norm": "none", "weight_norm_p": "2", "weight_norm_rho": "layer"}
EXTRA_STATE = "_extra_state"  # torch's key for get_extra_state()
DICTIONARIES = "dictionaries"  # the key of the dictionaries' fingerprint in the extra state


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


def add_weight_norm_args(parser) -> None:
    parser.add_argument("--weight-norm", choices=WEIGHT_NORM_MODES,
                        help="weight normalization of every Linear/LSTM weight but the output projection")
    parser.add_argument("--weight-norm-p", choices=("1", "2", "inf"),
                        help="norm of the weight rows for --weight-norm")
    parser.add_argument("--weight-norm-rho", choices=RHO_MODES,
                        help="BWN bound: one per layer (mean initial row norm) or per row")


def add_precision_args(parser) -> None:
    parser.add_argument("--autocast-bf16", action="store_true",
                        help="train with the forward under torch.autocast(bfloat16) and float32 weights, "
                             "gradients and optimizer (fairseq's --bf16 implies --tpu); validation and "
                             "generation run in float32. Not saved with the normalization flags")


def check_float32_weights(model) -> None:
    """--autocast-bf16 trains float32 weights: refuse a model that fairseq's --fp16 (or
    --memory-efficient-fp16) turned into float16. Evaluation tools may still run it in fp16."""
    dtype = next(model.parameters()).dtype
    if dtype != torch.float32:
        raise ValueError(f"--autocast-bf16 trains float32 weights under bf16 autocast, but this model's weights "
                         f"are {dtype} (fairseq's --fp16 or --memory-efficient-fp16): give only one of them")


def normalization_signature(args) -> dict:
    """The flags that decide what the model computes, as strings (irrelevant ones left out)."""
    norm_type, weight_norm = getattr(args, "norm_type", "l2"), args.weight_norm
    keys = ["weight_norm"] + (["norm_type"] if hasattr(args, "norm_type") else [])
    keys += ["norm_constant"] if norm_type in SCALE_FUNCTIONS else []
    keys += ["norm_topk"] if norm_type == "topk" else []
    keys += ["weight_norm_p", "weight_norm_rho"] if weight_norm != "none" else []
    return {key: str(getattr(args, key)) for key in keys}


def set_defaults(args, defaults: dict) -> None:
    """Set each option of `defaults` that args lacks (or holds as None)."""
    for key, value in defaults.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)


def weight_norm_target(name: str, module) -> bool:
    """Every Linear / LSTM / LSTMCell / Conv except the vocabulary projection."""
    return isinstance(module, DEFAULT_TYPES) and name.rsplit(".", 1)[-1] not in OUTPUT_PROJECTIONS


def normalize_model(model, args):
    """Apply --norm-type (if the model has the flag) and --weight-norm to a built fairseq model."""
    if getattr(args, "norm_type", "l2") != "l2":
        options = {"constant": args.norm_constant} if args.norm_type in SCALE_FUNCTIONS else {}
        if args.norm_type == "topk":
            options["k"] = args.norm_topk
        try:
            count = replace_layer_norms(model, args.norm_type, **options)
        except ValueError as error:
            raise ValueError(f"--norm-type {args.norm_type} --norm-topk {args.norm_topk} "
                             f"--norm-constant {args.norm_constant}: {error}") from None
        logger.info("replaced %d layer norms by %s", count, args.norm_type)
    if args.weight_norm != "none":
        names = apply_weight_norm(model, args.weight_norm, p=args.weight_norm_p,
                                  rho=args.weight_norm_rho, include=weight_norm_target)
        logger.info("%s (p=%s) on %d weights", args.weight_norm, args.weight_norm_p, len(names))
        decoder = getattr(model, "decoder", None)
        if decoder is not None:
            cache_weights_per_forward(decoder)
    return model


def dictionary_fingerprint(task) -> dict:
    """The data directory and, per side, the size and sha256 of the symbols of the task's
    dictionaries: enough to tell whether a checkpoint's embeddings fit another data directory."""
    sides = {"source": getattr(task, "source_dictionary", None), "target": getattr(task, "target_dictionary", None)}
    fingerprint = {side: {"symbols": len(d), "sha256": hashlib.sha256("\n".join(d.symbols).encode()).hexdigest()}
                   for side, d in sides.items() if d is not None}
    return {"data": absolute_data_path(getattr(getattr(task, "cfg", None), "data", "")), **fingerprint}


def absolute_data_path(data) -> str:
    """fairseq's --data (colon-separated shards) with each local path made absolute."""
    data = str(data)
    return data if "://" in data else os.pathsep.join(os.path.abspath(path) for path in data.split(os.pathsep))


def check_dictionaries(trained, now) -> None:
    """Raise ValueError if the dictionaries fingerprinted in `trained` (from a checkpoint) are not
    the ones in `now` (the data directory of this run), naming each side that differs."""
    differences = [describe_difference(side, trained[side], now[side])
                   for side in ("source", "target") if side in trained and side in now and trained[side] != now[side]]
    if differences:
        raise ValueError(f"the dictionaries of data directory {now['data']} are not the ones this checkpoint was "
                         f"trained with: {'; '.join(differences)}. Use the data directory the model was trained on "
                         f"({trained['data']}), or data binarized with its dictionaries (fairseq-preprocess "
                         "--srcdict/--tgtdict)")


def describe_difference(side, trained, now) -> str:
    """One side's dictionary change, in words."""
    if trained["symbols"] == now["symbols"]:
        return f"{side} dictionary: same size ({now['symbols']} symbols) but other symbols"
    return f"{side} dictionary: {trained['symbols']} symbols in the checkpoint but {now['symbols']} now"


class NormalizedModel:
    """Mixin before a fairseq model class: adds `flag_groups` to its flags and, once fairseq
    has built the model, applies them (normalize_model). `default_architecture(args)` fills the
    options an old checkpoint or a bare --arch lacks; --autocast-bf16 wraps the training forward
    in bf16 autocast. The normalization flags and a fingerprint of the dictionaries travel with
    the weights (`_extra_state`), so that loading weights trained with other flags is refused
    unless it is a deliberate conversion (--reset-optimizer), and weights trained on other
    dictionaries are always refused."""

    flag_groups = (add_weight_norm_args, add_precision_args)

    @staticmethod
    def default_architecture(args):
        raise NotImplementedError

    @classmethod
    def add_args(cls, parser):
        super().add_args(parser)
        for add_flags in cls.flag_groups:
            add_flags(parser)

    @classmethod
    def build_model(cls, args, task):
        cls.default_architecture(args)
        model = normalize_model(super().build_model(args, task), args)
        model.normalization = normalization_signature(args)
        model.normalization_may_change = bool(getattr(args, "reset_optimizer", False))
        model.dictionaries = dictionary_fingerprint(task)
        model.autocast_bf16 = bool(getattr(args, "autocast_bf16", False))
        return model

    def forward(self, src_tokens, *args, **kwargs):
        """fairseq's forward; in training mode with --autocast-bf16, under torch.autocast(bfloat16)
        on the device of src_tokens (the weights, gradients and optimizer stay float32)."""
        if not (self.training and self.autocast_bf16):
            return super().forward(src_tokens, *args, **kwargs)
        check_float32_weights(self)
        with torch.autocast(device_type=src_tokens.device.type, dtype=torch.bfloat16):
            return super().forward(src_tokens, *args, **kwargs)

    def get_extra_state(self):
        """The normalization flags and the dictionaries' fingerprint, saved with the weights as `_extra_state`."""
        return {**self.normalization, DICTIONARIES: self.dictionaries}

    def set_extra_state(self, state):
        """Refuse weights trained on other dictionaries, and weights trained with other normalization
        flags except in a deliberate conversion (--reset-optimizer, as in --restore-file
        L2_CHECKPOINT --reset-optimizer). Checkpoints without the fingerprint (older ones) pass."""
        normalization = dict(state)
        check_dictionaries(normalization.pop(DICTIONARIES, {}), self.dictionaries)
        keys = sorted(set(normalization) | set(self.normalization))
        changed = {k: (normalization.get(k, "unset"), self.normalization.get(k, "unset")) for k in keys
                   if normalization.get(k) != self.normalization.get(k)}
        if changed and not self.normalization_may_change:
            flags = ", ".join(f"--{k.replace('_', '-')} {old} in the checkpoint but {new} now"
                              for k, (old, new) in changed.items())
            raise ValueError(f"this checkpoint was trained with other normalization flags ({flags}). "
                             "Resume with the checkpoint's flags, or convert it deliberately with "
                             "--restore-file CHECKPOINT --reset-optimizer")

    def upgrade_state_dict_named(self, state_dict, name):
        """Checkpoints of stock fairseq models (or older ones) have no `_extra_state`: accept them.
        Check the extra state here too: fairseq calls this before loading any weight, so other
        dictionaries are named before torch reports embeddings of another size."""
        super().upgrade_state_dict_named(state_dict, name)
        key = f"{name}.{EXTRA_STATE}" if name else EXTRA_STATE
        self.set_extra_state(state_dict.setdefault(key, self.get_extra_state()))


def register_model_once(name):
    """fairseq's register_model, tolerant of this plugin being imported twice under two module
    names (installed package + --user-dir path; fairseq#2081): the first class stays registered."""
    def wrap(cls):
        if _same_class(MODEL_REGISTRY.get(name), cls):
            return cls
        return register_model(name)(cls)
    return wrap


def register_architectures(model_name, variants):
    """Register named architectures; variants maps name -> (base architecture, defaults)."""
    for arch_name, (base, defaults) in variants.items():
        if _same_class(ARCH_MODEL_REGISTRY.get(arch_name), MODEL_REGISTRY[model_name]):
            continue
        register_model_architecture(model_name, arch_name)(with_defaults(base, defaults))


def with_defaults(base, defaults):
    """An architecture function: set `defaults` where args lacks them, then call `base`."""
    def architecture(args):
        set_defaults(args, defaults)
        base(args)
    return architecture


def _same_class(registered, cls) -> bool:
    return registered is not None and registered.__qualname__ == cls.__qualname__ and \
        registered.__module__.rsplit(".", 1)[-1] == cls.__module__.rsplit(".", 1)[-1]
