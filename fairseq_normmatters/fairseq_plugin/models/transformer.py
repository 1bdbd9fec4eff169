"""norm_transformer: fairseq's Transformer with its layer norms swapped and optional (B)WN.

    fairseq-train DATA --user-dir fairseq_normmatters --arch norm_transformer_l1_wmt_en_de ...

The model is built by fairseq's own TransformerModel; `normalize_model` then replaces every
LayerNorm (attention, feed-forward, final and embedding norms) by the --norm-type kind and
applies --weight-norm to every Linear of the attention and feed-forward blocks. Embeddings and
the output projection (tied to the embeddings when shared) keep plain weights.
"""

from fairseq.models.transformer import TransformerModel
from fairseq.models.transformer.transformer_legacy import (
    base_architecture, transformer_iwslt_de_en, transformer_vaswani_wmt_en_de_big, transformer_wmt_en_de)

from .flags import NORM_DEFAULTS, WEIGHT_NORM_DEFAULTS, add_norm_args, set_defaults
from .normalized_model import NormalizedModel
from .registry import register_architectures, register_model_once


def norm_transformer_base(args):
    set_defaults(args, {**NORM_DEFAULTS, **WEIGHT_NORM_DEFAULTS})
    base_architecture(args)


@register_model_once("norm_transformer")
class NormTransformerModel(NormalizedModel, TransformerModel):
    """Transformer (Vaswani et al.) with the norms of Hoffer et al. 2018."""

    flag_groups = (add_norm_args, *NormalizedModel.flag_groups)
    default_architecture = staticmethod(norm_transformer_base)


L1 = {"norm_type": "l1"}
LINF = {"norm_type": "linf"}
TOPK = {"norm_type": "topk", "norm_topk": 8}
BWN = {"norm_type": "none", "weight_norm": "bwn"}  # the paper's Table 1: BWN instead of LN
L1_C1 = {"norm_type": "l1", "norm_constant": 1.0}  # the supplement's "no C_L1" ablation

register_architectures("norm_transformer", {
    "norm_transformer": (norm_transformer_base, {}),
    "norm_transformer_wmt_en_de": (transformer_wmt_en_de, {}),
    "norm_transformer_l1_wmt_en_de": (transformer_wmt_en_de, L1),
    "norm_transformer_linf_wmt_en_de": (transformer_wmt_en_de, LINF),
    "norm_transformer_topk_wmt_en_de": (transformer_wmt_en_de, TOPK),
    "norm_transformer_bwn_wmt_en_de": (transformer_wmt_en_de, BWN),
    "norm_transformer_l1_c1_wmt_en_de": (transformer_wmt_en_de, L1_C1),
    "norm_transformer_vaswani_wmt_en_de_big": (transformer_vaswani_wmt_en_de_big, {}),
    "norm_transformer_l1_vaswani_wmt_en_de_big": (transformer_vaswani_wmt_en_de_big, L1),
    "norm_transformer_bwn_vaswani_wmt_en_de_big": (transformer_vaswani_wmt_en_de_big, BWN),
    "norm_transformer_iwslt_de_en": (transformer_iwslt_de_en, {}),
    "norm_transformer_l1_iwslt_de_en": (transformer_iwslt_de_en, L1),
    "norm_transformer_linf_iwslt_de_en": (transformer_iwslt_de_en, LINF),
    "norm_transformer_bwn_iwslt_de_en": (transformer_iwslt_de_en, BWN),
})
