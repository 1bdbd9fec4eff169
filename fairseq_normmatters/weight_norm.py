"""Weight normalization (WN) and bounded weight normalization (BWN), as parametrizations.

For a weight v whose rows (dim 0: output units, or LSTM gate units) are normalized in the
p-norm (p in 1, 2, inf):

    WN  (Salimans & Kingma 2016):  w = g * v / ||v||_p,    g trainable, one per row
    BWN (Hoffer et al. 2018):      w = rho * v / ||v||_p,  rho fixed (a buffer)

BWN's rho is measured at registration in the same p-norm, so no calibration constant enters:
rho="layer" (default) is one scalar, the mean of the initial row norms (the authors' later
code); rho="row" keeps every row's initial norm. One scalar lets no unit's scale drift or be
pinned to its random initial value; the per-unit gain then comes from the layer that follows.
BWN is scale invariant (v -> c v, c > 0, changes nothing), so activation normalization can be
removed. As in the authors' code (convNet.pytorch, models/modules/bwn.py), v's rows are held at
unit L2 norm: registration stores v = w / ||w||_2 and every forward renormalizes v in place
before using it. Without that, ||v|| grows under the optimizer (the gradient of a
scale-invariant function is orthogonal to v) and the effective step on w's direction shrinks
as training goes on. The forward divides by the p-norm (as the authors' norm_matters/bwn.py;
convNet's divides by the L2 norm whatever p is, which would give rows of L2 norm rho_p).
Under fairseq's --fp16 the optimizer steps float32 master copies that the forward cannot
reach: there ||v|| is held in the half-precision copy only (--amp and --autocast-bf16 train the
parameters themselves).

    >>> import torch.nn as nn
    >>> from fairseq_normmatters import apply_weight_norm, bounded_weight_norm
    >>> layer = bounded_weight_norm(nn.Linear(512, 512), p=1)
    >>> model = nn.Sequential(nn.Linear(512, 2048), nn.ReLU(), nn.Linear(2048, 512))
    >>> names = apply_weight_norm(model, "bwn")      # every Linear / LSTM / LSTMCell / Conv
"""

import math
import warnings
from typing import Callable, List, Optional

import torch
import torch.nn as nn
from torch.nn.utils import parametrize

WEIGHT_NORM_MODES = ("none", "wn", "bwn")
RHO_MODES = ("layer", "row")
NORM_ORDERS = (1, 2, math.inf)
DEFAULT_TYPES = (nn.Linear, nn.LSTM, nn.LSTMCell, nn.Conv1d, nn.Conv2d)


def check_order(p) -> float:
    """p as a float in (1, 2, inf); accepts 1, 2, "1", "2", "inf", math.inf."""
    try:
        value = float(p)
    except (TypeError, ValueError):
        value = None
    if value not in NORM_ORDERS:
        raise ValueError(f"weight-norm p={p!r} is not allowed; allowed: 1, 2, inf")
    return value


def row_norms(v: torch.Tensor, p: float) -> torch.Tensor:
    """||v_i||_p of every row i (all dims but 0), kept broadcastable to v."""
    return torch.linalg.vector_norm(v, ord=p, dim=tuple(range(1, v.dim())), keepdim=True)


class BoundedWeightNorm(nn.Module):
    """Parametrization w = rho * v / ||v||_p per row, rho a fixed buffer, v's rows held at unit
    L2 norm (renormalized in place on every forward)."""

    def __init__(self, weight: torch.Tensor, p=2, rho="layer"):
        super().__init__()
        if rho not in RHO_MODES:
            raise ValueError(f"BWN rho={rho!r} is not allowed; allowed: {', '.join(RHO_MODES)}")
        self.p = check_order(p)
        initial = row_norms(weight.detach(), self.p)
        self.register_buffer("rho", initial.mean() if rho == "layer" else initial.clone())

    def forward(self, v):
        hold_unit_rows(v)
        return self.rho * v / row_norms(v, self.p).clamp_min(torch.finfo(v.dtype).tiny)

    def right_inverse(self, w):
        """v = w / ||w||_2 per row: the direction of w (its norm is rho's)."""
        return w / row_norms(w, 2).clamp_min(torch.finfo(w.dtype).tiny)

    def extra_repr(self):
        return f"p={self.p}, rho={'scalar' if self.rho.dim() == 0 else 'per row'}"


def hold_unit_rows(v: torch.Tensor) -> None:
    """Divide v's rows by their L2 norms in place, through `.data` as the authors' code does:
    autograd does not see it, so a graph that saved v earlier in this forward (an LSTM cell
    stepped over time) stays valid; v's rows are already unit there and change by rounding only."""
    data = v.data
    with torch.no_grad():
        data.div_(row_norms(data, 2).clamp_min(torch.finfo(data.dtype).tiny))


class GainWeightNorm(nn.Module):
    """Parametrization w = g * v / ||v||_p per row, g trainable (original0), v (original1)."""

    def __init__(self, p=2):
        super().__init__()
        self.p = check_order(p)

    def forward(self, g, v):
        return g * v / row_norms(v, self.p).clamp_min(torch.finfo(v.dtype).tiny)

    def right_inverse(self, w):
        return row_norms(w, self.p), w

    def extra_repr(self):
        return f"p={self.p}"


def weight_names(module: nn.Module) -> List[str]:
    """The matrix weights of a module that weight norm applies to: `weight`, LSTM's `weight_ih_l0`..."""
    return [n for n, p in module.named_parameters(recurse=False) if n.startswith("weight") and p.dim() >= 2]


def bounded_weight_norm(module: nn.Module, name: str = "weight", p=2, rho="layer") -> nn.Module:
    """Register BWN on `module.<name>`: w = rho * v / ||v||_p per row, rho fixed; returns module.

    Example: ``layer = bounded_weight_norm(nn.Linear(20, 40), p=float("inf"))``.
    """
    return _register(module, name, "bwn", p, rho)


def _register(module, name, mode, p, rho="layer"):
    weight = getattr(module, name, None)
    if not isinstance(weight, torch.Tensor) or weight.dim() < 2:
        raise ValueError(
            f"{type(module).__name__} has no matrix weight named {name!r}; "
            f"its parameters are: {', '.join(n for n, _ in module.named_parameters(recurse=False))}"
        )
    if parametrize.is_parametrized(module, name):
        raise ValueError(f"{type(module).__name__}.{name} already has a parametrization")
    if mode == "bwn":
        parametrization = BoundedWeightNorm(weight, p, rho)
    else:
        parametrization = GainWeightNorm(p)
    parametrize.register_parametrization(module, name, parametrization)
    return module


def apply_weight_norm(model: nn.Module, mode: str, p=2, rho="layer",
                      include: Optional[Callable[[str, nn.Module], bool]] = None) -> List[str]:
    """Apply WN or BWN to every weight of the selected modules of `model`; returns their names.

    mode: "none" (nothing), "wn" or "bwn". include(qualified_name, module) -> bool selects the
    modules; by default every nn.Linear, nn.LSTM, nn.LSTMCell, nn.Conv1d and nn.Conv2d.
    """
    if mode not in WEIGHT_NORM_MODES:
        raise ValueError(f"weight-norm mode {mode!r} is unknown; allowed: {', '.join(WEIGHT_NORM_MODES)}")
    check_order(p)
    if mode == "none":
        return []
    include = include or (lambda name, module: isinstance(module, DEFAULT_TYPES))
    done = []
    for module_name, module in list(model.named_modules()):
        if not include(module_name, module):
            continue
        for name in weight_names(module):
            _register(module, name, mode, p, rho)
            done.append(f"{module_name}.{name}" if module_name else name)
    return done


def bake_weight_norms(model: nn.Module) -> List[str]:
    """Bake every WN/BWN weight of `model` back into a plain parameter (w as currently
    computed); returns their names."""
    removed = []
    for module_name, module in list(model.named_modules()):
        if not parametrize.is_parametrized(module):
            continue
        for name, chain in list(module.parametrizations.items()):
            if any(isinstance(t, (BoundedWeightNorm, GainWeightNorm)) for t in chain):
                parametrize.remove_parametrizations(module, name, leave_parametrized=True)
                removed.append(f"{module_name}.{name}" if module_name else name)
    return removed


def remove_weight_norm(model: nn.Module) -> List[str]:
    """Deprecated name of bake_weight_norms (torch's remove_weight_norm takes one module and a
    weight name; this walks a whole model)."""
    warnings.warn("fairseq_normmatters.remove_weight_norm is now bake_weight_norms", DeprecationWarning,
                  stacklevel=2)
    return bake_weight_norms(model)
