"""Where models start: the authors' initialization for models without activation norms, and
every default configuration of the WMT14 recipe near a uniform guess at its full size."""

import math

import pytest
import torch
import torch.nn as nn

from fairseq_normmatters import apply_weight_norm
from fairseq_normmatters.initialization import authors_initialization
from fairseq_normmatters.recipes.compare import DEFAULT_CONFIGS
from initial_loss import build, initial_state, joint_dictionary

WMT_VOCAB = 32000  # the recipe's joint sentencepiece vocabulary


def test_authors_initialization_draws_pytorch_default_linears_and_uniform_embeddings():
    embedding = nn.Embedding(1000, 64, padding_idx=1)
    model = nn.ModuleDict({"embed": embedding, "ffn": nn.Linear(64, 256), "out": nn.Linear(64, 1000, bias=False)})
    model["out"].weight = embedding.weight  # tied, as fairseq's --share-all-embeddings
    nn.init.normal_(model["ffn"].bias)
    assert authors_initialization(model) == 2  # the tied weight is drawn once
    bound = 1 / math.sqrt(64)
    assert embedding.weight.abs().max() <= bound and embedding.weight.std() > 0.9 * bound / math.sqrt(3)
    assert embedding.weight[1].abs().sum() == 0  # the padding row, not redrawn by the tied projection
    assert model["ffn"].weight.abs().max() <= bound and model["ffn"].bias.abs().sum() == 0


def test_authors_initialization_refuses_weight_normalized_layers():
    model = nn.Sequential(nn.Linear(4, 4))
    apply_weight_norm(model, "bwn")
    with pytest.raises(ValueError, match=r"0.weight is parametrized \(weight norm\): initialize before"):
        authors_initialization(model)


@pytest.fixture(scope="module")
def wmt_dictionary(tmp_path_factory):
    folder = tmp_path_factory.mktemp("wmt_dictionary")
    joint_dictionary(folder, WMT_VOCAB)
    return folder


@pytest.fixture(scope="module")
def l2_start(wmt_dictionary):
    return initial_state(build("transformer_l2", wmt_dictionary), WMT_VOCAB)


@pytest.mark.long
@pytest.mark.parametrize("config", [c for c in DEFAULT_CONFIGS if c != "transformer_l2"])
def test_every_default_configuration_starts_near_the_l2_model_at_full_size(config, wmt_dictionary, l2_start):
    """fairseq's build of the recipe's model (6 layers, 512 wide, or the 1000-wide LSTM), 32k
    joint vocabulary: the label-smoothed loss at initialization within 1.5 bits of the L2
    Transformer's (itself within 1 bit of log2 V), and the decoder's residual stream bounded."""
    start = initial_state(build(config, wmt_dictionary), WMT_VOCAB)
    assert l2_start.loss_bits - l2_start.uniform_bits < 1.0
    assert abs(start.loss_bits - l2_start.loss_bits) < 1.5, (config, start)
    if start.residual_rms:
        assert len(start.residual_rms) == 6 and max(start.residual_rms) < 2.0, start.residual_rms


@pytest.mark.long
def test_fairseq_initialization_without_norms_starts_far_above_uniform(wmt_dictionary, l2_start):
    """The fault the authors' initialization mends, measured the same way: the Transformer
    without norms from fairseq's own initialization starts tens of bits above the L2 model,
    its residual stream growing layer by layer."""
    start = initial_state(build("transformer_none", wmt_dictionary, ["--init-scheme", "fairseq"]), WMT_VOCAB)
    assert start.loss_bits > l2_start.loss_bits + 20
    assert start.residual_rms[-1] > 3 * start.residual_rms[0]


def test_init_scheme_is_logged_and_bwn_bound_measured_after_it(wmt_dictionary, caplog):
    """BWN's rho is measured from the authors' weights (drawn before weight norm is applied):
    each attention projection's rho is the mean L2 norm of U(+-1/sqrt(512)) rows, 1/sqrt(3)."""
    import logging
    with caplog.at_level(logging.INFO):
        model = build("transformer_bwn", wmt_dictionary)
    assert "initialization: the authors'" in caplog.text
    rho = model.encoder.layers[0].self_attn.q_proj.parametrizations.weight[0].rho
    torch.testing.assert_close(rho, torch.tensor(1 / math.sqrt(3)), rtol=0.02, atol=0)
