"""NormalizedModel: what norm_transformer and norm_lstm add to a fairseq model class."""

from .autocast_bf16 import AutocastBF16
from .checkpoint_guard import CheckpointGuard
from .flags import add_precision_args, add_weight_norm_args, normalization_signature
from .normalize import normalize_model


class NormalizedModel(CheckpointGuard, AutocastBF16):
    """Mixin before a fairseq model class: adds `flag_groups` to its flags and, once fairseq
    has built the model, applies them (normalize_model), guards its checkpoints (CheckpointGuard)
    and sets --autocast-bf16 (AutocastBF16). `default_architecture(args)` fills the options an
    old checkpoint or a bare --arch lacks."""

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
        model.guard_checkpoints(normalization_signature(args), task,
                                conversion_allowed=bool(getattr(args, "reset_optimizer", False)))
        model.autocast_bf16 = bool(getattr(args, "autocast_bf16", False))
        return model
