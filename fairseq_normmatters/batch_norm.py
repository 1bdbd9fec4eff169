"""Batch norms with the l1 / linf / topk scales of "Norm matters", and torch's for l2.

Per channel (dim 1) over the batch and the spatial positions, n elements per channel:

    training:  y = gamma * (x - mu_B) / (C(n) * scale(x - mu_B) + eps) + beta
    eval:      y = gamma * (x - running_mean) / (running_scale + eps) + beta

scale is mean|d| (l1), max|d| (linf) or the mean of the k largest |d| (topk), C from
`fairseq_normmatters.constants`; running_scale tracks C * scale, an estimate of sigma.
"""

import torch
import torch.nn as nn

from .constants import check_constant
from .kernels.rows import affine as apply_affine
from .norms import SCALE_FUNCTIONS, check_eps, deviation_scale, init_affine, upcast


def check_batch_dim(dim) -> int:
    if dim not in (1, 2):
        raise ValueError(f"batch norm dim must be 1 (N, C[, L]) or 2 (N, C, H, W), got {dim!r}")
    return dim


def torch_batch_norm(num_features, dim=2, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True):
    """torch's BatchNorm1d (dim=1) or BatchNorm2d (dim=2): the l2 batch norm."""
    cls = nn.BatchNorm1d if check_batch_dim(dim) == 1 else nn.BatchNorm2d
    return cls(num_features, check_eps(eps), momentum, affine, track_running_stats)


class DeviationBatchNorm(nn.Module):
    """Batch norm with the l1 / linf / topk scale, per channel (dim 1) over batch and space.

    Training: y = gamma * (x - mu_B) / (C(n) * scale(x - mu_B) + eps) + beta, n = elements per
    channel in the batch. running_mean and running_scale (the calibrated C * scale, an
    estimate of sigma) follow torch's convention: r = (1 - momentum) * r + momentum * batch
    value (momentum None: cumulative average). Eval: (x - running_mean) / (running_scale + eps).
    """

    def __init__(self, kind, num_features, dim=2, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True, constant="paper", k=None):
        super().__init__()
        if kind not in SCALE_FUNCTIONS:
            raise ValueError(f"DeviationBatchNorm kind {kind!r} is unknown; allowed: {', '.join(SCALE_FUNCTIONS)} "
                             "(l2 is torch's batch norm: build_batch_norm('l2', ...))")
        check_batch_dim(dim)
        check_constant(constant)
        if kind == "topk" and (not isinstance(k, int) or k < 1):
            raise ValueError(f"top-k batch norm needs an integer k >= 1, got k={k!r}")
        self.kind, self.dim, self.k, self.constant = kind, dim, k, constant
        self.num_features, self.eps, self.momentum = num_features, check_eps(eps), momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        init_affine(self, affine, shape=(num_features,))
        if track_running_stats:
            self.register_buffer("running_mean", torch.zeros(num_features))
            self.register_buffer("running_scale", torch.ones(num_features))
            self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def forward(self, x):
        self._check_input(x)
        channels_last = upcast(x).transpose(0, 1).reshape(self.num_features, -1)
        if self.training or not self.track_running_stats:
            mean = channels_last.mean(-1, keepdim=True)
            scale = deviation_scale(channels_last - mean, self.kind, self.constant, self.k)
            if self.training and self.track_running_stats:
                self._update_running_stats(mean.squeeze(1), scale.squeeze(1))
        else:
            mean, scale = self.running_mean.unsqueeze(1), self.running_scale.unsqueeze(1)
        y = ((channels_last - mean) / (scale + self.eps)).view_as(x.transpose(0, 1)).transpose(0, 1)
        view = (1, -1) + (1,) * (x.dim() - 2)
        weight = self.weight.view(view) if self.affine else None
        bias = self.bias.view(view) if self.affine else None
        return apply_affine(y, weight, bias).to(x.dtype)

    @torch.no_grad()
    def _update_running_stats(self, mean, scale):
        self.num_batches_tracked += 1
        m = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        self.running_mean.lerp_(mean, m)
        self.running_scale.lerp_(scale, m)

    def _check_input(self, x):
        allowed = (2, 3) if self.dim == 1 else (4,)
        if x.dim() not in allowed or x.shape[1] != self.num_features:
            raise ValueError(
                f"{type(self).__name__}(dim={self.dim}) expects input of {allowed} dims with "
                f"{self.num_features} channels in dim 1, got shape {tuple(x.shape)}"
            )

    def extra_repr(self):
        k = f", k={self.k}" if self.kind == "topk" else ""
        return (f"{self.kind}, {self.num_features}, dim={self.dim}, eps={self.eps}, "
                f"momentum={self.momentum}, constant={self.constant!r}{k}, affine={self.affine}")
