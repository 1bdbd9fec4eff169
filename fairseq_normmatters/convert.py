"""Swap the layer norms of any built model for another norm kind, keeping gains and biases."""

from typing import List, Tuple

import torch
import torch.nn as nn
from torch.nn.utils import parametrize

from .kinds import build_norm


def is_layer_norm(module: nn.Module) -> bool:
    """torch LayerNorm and its subclasses (fairseq's Fp32LayerNorm, ours) or apex FusedLayerNorm.
    apex is recognized by its class's name and module, not by isinstance: importing apex to get
    the class would import it (and its CUDA extensions) in every process, or fail where it is
    not installed."""
    cls = type(module)
    return isinstance(module, nn.LayerNorm) or (cls.__name__ == "FusedLayerNorm" and cls.__module__.startswith("apex"))


def find_layer_norms(model: nn.Module) -> List[Tuple[nn.Module, str, nn.Module]]:
    """(parent, attribute name, layer norm) for every layer norm inside `model`."""
    return [(parent, name, child)
            for parent in model.modules()
            for name, child in parent.named_children()
            if is_layer_norm(child)]


def replace_layer_norms(model: nn.Module, kind: str, **options) -> int:
    """Replace every layer norm in `model` by build_norm(kind, ...) with the same shape, eps and
    affine setting, copying its gain and bias, under the same attribute name (so state_dict keys
    stay the same); kind "none" puts nn.Identity there. Returns how many were replaced.
    """
    found = find_layer_norms(model)
    for parent, name, old in found:
        affine = old.weight is not None
        new = build_norm(kind, tuple(old.normalized_shape), old.eps, affine, **options)
        if affine and kind != "none":
            new.to(old.weight.device, old.weight.dtype)
            with torch.no_grad():
                new.weight.copy_(old.weight)
                if getattr(old, "bias", None) is not None:
                    new.bias.copy_(old.bias)
        setattr(parent, name, new)
    return len(found)


def cache_weights_per_forward(module: nn.Module) -> nn.Module:
    """Compute each parametrized weight once per forward call of `module` (not once per use).

    fairseq's LSTM decoder calls its nn.LSTMCell layers once per time step; without the cache a
    WN/BWN weight would be recomputed at every step. Changes the instance's class to a subclass
    whose forward runs inside torch.nn.utils.parametrize.cached().
    """
    cls = type(module)
    if getattr(cls, "caches_parametrizations", False):
        return module

    def forward(self, *args, **kwargs):
        with parametrize.cached():
            return cls.forward(self, *args, **kwargs)

    module.__class__ = type(f"Cached{cls.__name__}", (cls,),
                            {"forward": forward, "caches_parametrizations": True})
    return module
