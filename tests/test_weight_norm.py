"""WN and BWN: the formulas, the fixed bound under training, LSTMs, state_dict, bad input."""

import math

import pytest
import torch
import torch.nn as nn
from torch.nn.utils import parametrize

from fairseq_normmatters import apply_weight_norm, bake_weight_norms, bounded_weight_norm, remove_weight_norm
from fairseq_normmatters.weight_norm import BoundedWeightNorm, row_norms

ORDERS = [1, 2, math.inf]


def rows(w, p):
    return row_norms(w, p).flatten()


@pytest.mark.parametrize("p", ORDERS)
def test_bwn_layer_rho_is_mean_of_initial_row_norms(p):
    layer = nn.Linear(6, 5)
    initial = rows(layer.weight.detach().clone(), p)
    bounded_weight_norm(layer, p=p)
    torch.testing.assert_close(rows(layer.weight, p), initial.mean().expand(5))


def test_bwn_row_rho_keeps_initial_weight():
    layer = nn.Linear(6, 5)
    w0 = layer.weight.detach().clone()
    bounded_weight_norm(layer, rho="row")
    torch.testing.assert_close(layer.weight, w0)


@pytest.mark.parametrize("p", ORDERS)
def test_bwn_is_scale_invariant(p):
    layer = bounded_weight_norm(nn.Linear(6, 5), p=p)
    x = torch.randn(3, 6)
    before = layer(x)
    with torch.no_grad():
        layer.parametrizations.weight.original.mul_(7.5)
    torch.testing.assert_close(layer(x), before)


@pytest.mark.parametrize("p", ORDERS)
def test_gradcheck_float64_wn(p):
    layer = nn.Linear(4, 3).double()
    apply_weight_norm(layer, "wn", p=p)
    x = torch.randn(2, 4, dtype=torch.float64)
    params = tuple(layer.parameters())
    assert torch.autograd.gradcheck(lambda *ps: layer(x), params)


@pytest.mark.parametrize("p", ORDERS)
def test_gradcheck_float64_bwn(p):
    """BWN renormalizes v in place on each forward, which would undo gradcheck's own
    perturbations of v: the formula is checked on a copy of v, whose rows it renormalizes, at a
    v of unit rows (where the forward finds it: there the renormalization changes nothing)."""
    layer = nn.Linear(4, 3).double()
    bwn = BoundedWeightNorm(layer.weight, p=p)
    x = torch.randn(2, 4, dtype=torch.float64)
    v = torch.randn(3, 4, dtype=torch.float64)
    v = (v / rows(v, 2).unsqueeze(1)).requires_grad_()
    assert torch.autograd.gradcheck(lambda v: nn.functional.linear(x, bwn(v.clone())), (v,))


@pytest.mark.parametrize("p", ORDERS)
def test_bwn_holds_v_at_unit_rows_and_w_at_rho_over_adam_steps(p):
    """The authors' bounded weight norm: ||v_i||_2 stays 1 (its value at registration) however
    many optimizer steps, and ||w_i||_p stays rho. Without the renormalization Adam grows ||v||."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    apply_weight_norm(model, "bwn", p=p)
    layers = (model[0], model[2])
    for layer in layers:
        torch.testing.assert_close(rows(layer.parametrizations.weight.original, 2), torch.ones(layer.out_features))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(20):
        optimizer.zero_grad()
        model(torch.randn(32, 8)).pow(2).mean().backward()
        optimizer.step()
        grown = max(rows(layer.parametrizations.weight.original, 2).max().item() for layer in layers)
        assert grown > 1.001  # the step moved v off the sphere; the next forward brings it back
    model(torch.randn(1, 8))
    for layer in layers:
        torch.testing.assert_close(rows(layer.parametrizations.weight.original, 2), torch.ones(layer.out_features))
        rho = layer.parametrizations.weight[0].rho
        torch.testing.assert_close(rows(layer.weight, p), rho.expand(layer.out_features))


@pytest.mark.parametrize("p", ORDERS)
def test_bound_holds_after_optimizer_steps(p):
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    apply_weight_norm(model, "bwn", p=p)
    rho = [m.parametrizations.weight[0].rho.clone() for m in (model[0], model[2])]
    weights_before = [model[0].weight.detach().clone(), model[2].weight.detach().clone()]
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(5):
        optimizer.zero_grad()
        model(torch.randn(32, 8)).pow(2).mean().backward()
        optimizer.step()
    for module, r, w0 in zip((model[0], model[2]), rho, weights_before):
        torch.testing.assert_close(rows(module.weight, p), r.expand(module.weight.shape[0]))
        assert not torch.allclose(module.weight, w0)
        assert "rho" not in dict(module.named_parameters(recurse=True))


def test_wn_gain_is_trainable_and_initial_weight_kept():
    layer = nn.Linear(6, 5)
    w0 = layer.weight.detach().clone()
    apply_weight_norm(layer, "wn")
    torch.testing.assert_close(layer.weight, w0)
    g = layer.parametrizations.weight.original0
    assert g.requires_grad and g.shape == (5, 1)
    layer(torch.randn(2, 6)).sum().backward()
    assert g.grad is not None and g.grad.abs().sum() > 0


def test_state_dict_round_trip():
    def build():
        model = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 2))
        apply_weight_norm(model, "bwn", p=1)
        return model

    trained = build()
    with torch.no_grad():
        trained[0].parametrizations.weight.original.add_(torch.randn(8, 4))
    fresh = build()
    fresh.load_state_dict(trained.state_dict())
    x = torch.randn(3, 4)
    torch.testing.assert_close(fresh(x), trained(x))
    assert "0.parametrizations.weight.0.rho" in trained.state_dict()


@pytest.mark.parametrize("mode", ["bwn", "wn"])
@pytest.mark.parametrize("factory", [lambda: nn.LSTM(5, 7, num_layers=2), lambda: nn.LSTMCell(5, 7)],
                         ids=["LSTM", "LSTMCell"])
def test_lstm_weights_really_change_after_a_step(factory, mode):
    """pytorch/pytorch#65688: a parametrized nn.LSTM could silently stop updating."""
    lstm = factory()
    names = apply_weight_norm(lstm, mode)
    assert len(names) == (4 if isinstance(lstm, nn.LSTM) else 2)
    before = {n: getattr(lstm, n).detach().clone() for n in names}
    bounds = {n: rows(getattr(lstm, n), 2).detach().clone() for n in names}
    optimizer = torch.optim.SGD(lstm.parameters(), lr=0.5)
    x = torch.randn(3, 4, 5)
    if isinstance(lstm, nn.LSTM):
        out = lstm(x)[0]
    else:  # step over time so that weight_hh sees a non-zero hidden state
        state = None
        for x_t in x:
            state = lstm(x_t, state)
        out = state[0]
    out.pow(2).sum().backward()
    optimizer.step()
    for n in names:
        assert (getattr(lstm, n) - before[n]).abs().max() > 1e-4, f"{n} did not change"
        if mode == "bwn":
            torch.testing.assert_close(rows(getattr(lstm, n), 2), bounds[n])


def test_bake_weight_norms_keeps_the_current_weights():
    model = nn.Sequential(nn.Linear(4, 8), nn.LSTM(8, 3))
    apply_weight_norm(model, "bwn")
    x = torch.randn(2, 5, 4)
    expected = model[1](model[0](x))[0]
    baked = bake_weight_norms(model)
    assert baked == ["0.weight", "1.weight_ih_l0", "1.weight_hh_l0"]
    assert not any(parametrize.is_parametrized(m) for m in model.modules())
    assert type(model[0]) is nn.Linear
    torch.testing.assert_close(model[1](model[0](x))[0], expected)


def test_remove_weight_norm_is_the_deprecated_name_of_bake_weight_norms():
    model = nn.Sequential(nn.Linear(4, 8))
    apply_weight_norm(model, "wn")
    with pytest.warns(DeprecationWarning, match="remove_weight_norm is now bake_weight_norms"):
        assert remove_weight_norm(model) == ["0.weight"]
    assert not parametrize.is_parametrized(model[0])


def test_include_selects_modules():
    model = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 4), nn.Linear(4, 10))
    names = apply_weight_norm(model, "bwn", include=lambda name, m: isinstance(m, nn.Linear) and name != "2")
    assert names == ["1.weight"]
    assert isinstance(model[1].parametrizations.weight[0], BoundedWeightNorm)
    assert not parametrize.is_parametrized(model[2])


def test_none_mode_changes_nothing():
    model = nn.Linear(3, 3)
    assert apply_weight_norm(model, "none") == []
    assert not parametrize.is_parametrized(model)


@pytest.mark.parametrize("call,message", [
    (lambda: apply_weight_norm(nn.Linear(3, 3), "bwn", p=3), "p=3 is not allowed; allowed: 1, 2, inf"),
    (lambda: bounded_weight_norm(nn.Linear(3, 3), p="two"), "p='two' is not allowed"),
    (lambda: apply_weight_norm(nn.Linear(3, 3), "spectral"), "'spectral' is unknown; allowed: none, wn, bwn"),
    (lambda: bounded_weight_norm(nn.Linear(3, 3), name="kernel"), "no matrix weight named 'kernel'; its parameters are: weight, bias"),
    (lambda: bounded_weight_norm(nn.Linear(3, 3), rho="global"), "rho='global' is not allowed; allowed: layer, row"),
    (lambda: bounded_weight_norm(bounded_weight_norm(nn.Linear(3, 3))), "already has a parametrization"),
])
def test_bad_input(call, message):
    with pytest.raises(ValueError) as error:
        call()
    assert message in str(error.value)
