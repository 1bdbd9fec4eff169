"""norm_lstm: fairseq's LSTM attention model with WN or BWN on every LSTM and Linear weight.

The paper's 2-layer LSTM (2 encoder + 2 decoder layers, attention). The WMT sizes are fairseq's
lstm_luong_wmt_en_de (1000-dim embeddings and states, Luong et al. 2015) with the paper's 2
layers instead of 4; the IWSLT sizes are lstm_wiseman_iwslt_de_en's (256) with 2 layers. An LSTM
has no layer norm: the flags are --weight-norm, --weight-norm-p, --weight-norm-rho (and
--autocast-bf16, as norm_transformer). The decoder
steps nn.LSTMCell over time, so its forward caches each normalized weight once per call.
"""

from fairseq.models.lstm import LSTMModel, base_architecture, lstm_luong_wmt_en_de, lstm_wiseman_iwslt_de_en

from .flags import WEIGHT_NORM_DEFAULTS, set_defaults
from .normalized_model import NormalizedModel
from .registry import register_architectures, register_model_once, with_defaults


def norm_lstm_base(args):
    set_defaults(args, WEIGHT_NORM_DEFAULTS)
    base_architecture(args)


@register_model_once("norm_lstm")
class NormLSTMModel(NormalizedModel, LSTMModel):
    """LSTM encoder-decoder with attention and optional WN / BWN (Hoffer et al. 2018)."""

    default_architecture = staticmethod(norm_lstm_base)


TWO_LAYERS = {"encoder_layers": 2, "decoder_layers": 2}
WMT = with_defaults(lstm_luong_wmt_en_de, TWO_LAYERS)
IWSLT = with_defaults(lstm_wiseman_iwslt_de_en, TWO_LAYERS)

register_architectures("norm_lstm", {
    "norm_lstm": (norm_lstm_base, {}),
    "norm_lstm_wmt_en_de": (WMT, {}),
    "norm_lstm_bwn_wmt_en_de": (WMT, {"weight_norm": "bwn"}),
    "norm_lstm_wn_wmt_en_de": (WMT, {"weight_norm": "wn"}),
    "norm_lstm_iwslt_de_en": (IWSLT, {}),
    "norm_lstm_bwn_iwslt_de_en": (IWSLT, {"weight_norm": "bwn"}),
    "norm_lstm_wn_iwslt_de_en": (IWSLT, {"weight_norm": "wn"}),
})
