"""The configurations of the comparison and the benchmarks they belong to: architecture and flags of
each CONFIG, the recipe's common flags, the GPUs of the reference batch, the precisions (the
settings are described in run/train.py's text, train_*.sh --help)."""

from typing import List, NamedTuple

# a checkpoint and a validation every 1000 updates (the last 5 kept: the final 4000 updates and
# the final state, as Vaswani et al. averaged checkpoints written minutes apart), no epoch ones
TAIL_CHECKPOINTS = ["--save-interval-updates", "1000", "--keep-interval-updates", "5", "--no-epoch-checkpoints",
                    "--validate-interval-updates", "1000"]
TRANSFORMER = ["--lr", "0.0007", "--dropout", "0.1"]
LSTM = ["--lr", "0.001", "--dropout", "0.2", "--clip-norm", "1.0"]


class Config(NamedTuple):
    """A configuration of the comparison: its architecture, its flags after the recipe's, and
    the PRECISION it trains in on GPUs by default: AUTO, one setting for every row compared
    (auto_precision), so that the rows differ in their norms only, not in their arithmetic."""
    arch: str
    flags: List[str]
    precision: str = "auto"


CONFIGS = {
    "transformer_l2": Config("norm_transformer_wmt_en_de", TRANSFORMER),
    "transformer_l1": Config("norm_transformer_l1_wmt_en_de", TRANSFORMER),
    "transformer_linf": Config("norm_transformer_linf_wmt_en_de", TRANSFORMER),
    "transformer_topk": Config("norm_transformer_topk_wmt_en_de", TRANSFORMER),
    "transformer_bwn": Config("norm_transformer_bwn_wmt_en_de", TRANSFORMER),
    "transformer_none": Config("norm_transformer_wmt_en_de", TRANSFORMER + ["--norm-type", "none"]),  # BWN's baseline
    "transformer_l1_c1": Config("norm_transformer_l1_c1_wmt_en_de", TRANSFORMER),
    "lstm_nonorm": Config("norm_lstm_wmt_en_de", LSTM),
    "lstm_bwn": Config("norm_lstm_bwn_wmt_en_de", LSTM),
}
COMMON = ["--task", "translation", "--share-all-embeddings", "--optimizer", "adam",
          "--adam-betas", "(0.9, 0.98)", "--adam-eps", "1e-9", "--lr-scheduler", "inverse_sqrt",
          "--warmup-updates", "4000", "--warmup-init-lr", "1e-07", "--criterion",
          "label_smoothed_cross_entropy", "--label-smoothing", "0.1", "--weight-decay", "0.0",
          "--max-update", "100000", *TAIL_CHECKPOINTS,
          "--log-format", "json", "--log-interval", "100", "--seed", "1"]
REFERENCE_GPUS = 8
IWSLT14_TRANSFORMER = ["--lr", "5e-4", "--dropout", "0.3", "--weight-decay", "0.0001"]
IWSLT14_CONFIGS = {
    "transformer_l2": Config("norm_transformer_iwslt_de_en", IWSLT14_TRANSFORMER),
    "transformer_l1": Config("norm_transformer_l1_iwslt_de_en", IWSLT14_TRANSFORMER),
    "transformer_linf": Config("norm_transformer_linf_iwslt_de_en", IWSLT14_TRANSFORMER),
    "transformer_bwn": Config("norm_transformer_bwn_iwslt_de_en", IWSLT14_TRANSFORMER),
    "transformer_none": Config("norm_transformer_iwslt_de_en", IWSLT14_TRANSFORMER + ["--norm-type", "none"]),
    "transformer_l1_c1": Config("norm_transformer_l1_iwslt_de_en", IWSLT14_TRANSFORMER + ["--norm-constant", "1.0"]),
    "lstm_nonorm": Config("norm_lstm_iwslt_de_en", LSTM),
    "lstm_bwn": Config("norm_lstm_bwn_iwslt_de_en", LSTM),
}
IWSLT14_COMMON = ["--task", "translation", "--share-decoder-input-output-embed", "--optimizer", "adam",
                  "--adam-betas", "(0.9, 0.98)", "--clip-norm", "0.0", "--lr-scheduler", "inverse_sqrt",
                  "--warmup-updates", "4000", "--criterion", "label_smoothed_cross_entropy",
                  "--label-smoothing", "0.1", "--max-epoch", "50",
                  "--keep-last-epochs", "10", "--log-format", "json", "--log-interval", "100", "--seed", "1"]
#: the kinds whose norms the comparison also runs accumulating in a narrow format
NARROW_ACCUMULATION_KINDS = ("l2", "l1", "linf")
#: --norm-accumulate's narrow formats (accumulation.ACCUMULATE_FORMATS but float32), named here so
#: that the report and the command builders do not import torch (tests/test_recipes.py checks them)
NARROW_FORMATS = ("fp16", "bf16")
ACCUMULATION_SUFFIX = "_acc_"  # transformer_l1_acc_bf16: transformer_l1 with --norm-accumulate bf16


def with_narrow_accumulation(configs: dict) -> dict:
    """configs and, for each Transformer of NARROW_ACCUMULATION_KINDS, the same model with its
    norms accumulating in fp16 (for GPUs) and in bf16 (for CPUs): transformer_KIND_acc_FORMAT."""
    narrow = {f"transformer_{kind}{ACCUMULATION_SUFFIX}{accumulate}":
              configs[f"transformer_{kind}"]._replace(flags=configs[f"transformer_{kind}"].flags
                                                      + ["--norm-accumulate", accumulate])
              for kind in NARROW_ACCUMULATION_KINDS for accumulate in NARROW_FORMATS}
    return {**configs, **narrow}


CONFIGS, IWSLT14_CONFIGS = with_narrow_accumulation(CONFIGS), with_narrow_accumulation(IWSLT14_CONFIGS)


class Benchmark(NamedTuple):
    """A benchmark's configurations, the flags every run of it takes before its configuration's,
    and the GPUs of its reference batch (x 4096 tokens)."""
    configs: dict
    common: List[str]
    reference_gpus: int


BENCHMARKS = {"wmt14": Benchmark(CONFIGS, COMMON, REFERENCE_GPUS),
              "iwslt14": Benchmark(IWSLT14_CONFIGS, IWSLT14_COMMON, 1)}
# PRECISION -> fairseq-train flags; bf16 is the plugin's autocast (fairseq's --bf16 implies --tpu)
PRECISIONS = {"fp16": ["--fp16"], "amp": ["--amp"], "bf16": ["--autocast-bf16"], "fp32": []}
CUDA_ONLY_PRECISIONS = ("fp16", "amp")  # fairseq's; on CPU they fall back to float32
AUTO = "auto"  # every configuration's default: auto_precision()
