"""The branch of the triplet network: a feed-forward net from the front-end vector to a unit-length embedding.

Only this module is needed to embed (serving imports it, never the training code); its layers and why
are in docs/training.md ("The branch").
"""

from __future__ import annotations

import itertools

import torch
from torch import nn
from torch.nn import functional as F

from pipelines.model.config import EncoderConfig

__all__ = ["Encoder", "EncoderConfig", "Ensemble", "build_encoder"]


class Dropout(nn.Module):
    """``nn.Dropout`` with its mask drawn as uniforms compared with ``p``: the same distribution, cheaper.

    Bernoulli draws cost two and a half times as much as uniforms on the CPU, and the per-frame layers
    drop out a value of every frame of every window of a batch; no weights, so state dicts are unchanged.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or not self.p:
            return x
        return x * (torch.rand_like(x) >= self.p) * (1.0 / (1.0 - self.p))


def std_over(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Sample standard deviation along ``dim`` (``x.std(dim)``), computed in two passes.

    ``torch.std`` over a middle dimension runs about eight times slower on the CPU; the two-pass sum
    agrees with it to the last bit or two of float32. Where the deviation is zero (a unit that is off in
    every frame) the gradient is zero, as ``torch.std`` has it, not NaN.
    """
    centred = x - x.mean(dim, keepdim=True)
    var = centred.square().sum(dim) / (x.shape[dim] - 1)
    return var.clamp_min(torch.finfo(x.dtype).tiny).sqrt() * (var > 0)


def _mlp(sizes: list[int], dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(sizes):
        layers += [nn.Linear(a, b), nn.ReLU()]
        if dropout:
            layers.append(Dropout(dropout))
    return nn.Sequential(*layers)


def with_deltas(frames: torch.Tensor, order: int) -> torch.Tensor:
    """``(B, N, C)`` -> ``(B, N, C * (1 + order))``: frames with their first/second differences over time.

    A centred difference with edge replication; no parameters, so it is part of the input encoding.
    """
    out = [frames]
    cur = frames
    for _ in range(order):
        padded = torch.cat([cur[:, :1], cur, cur[:, -1:]], dim=1)
        cur = (padded[:, 2:] - padded[:, :-2]) / 2.0
        out.append(cur)
    return torch.cat(out, dim=2)


class Encoder(nn.Module):
    """One branch of the triplet network; the weights are shared by anchor, positive and negative."""

    mean: torch.Tensor  # buffers, registered in __init__: declared so their type is known
    std: torch.Tensor

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        if config.members != 1:
            raise ValueError("an Encoder is one branch; build an ensemble with build_encoder()")
        if config.context % 2 == 0:
            raise ValueError(f"context must be odd, got {config.context}")
        self.config = config
        # Training may leave the statistics out of the output (see TrainConfig.stats_in_training); the
        # stored model always has them on. A plain attribute, not weights: serving never changes it.
        self.with_stats = True
        c = config
        stat_shape = (c.channels,) if c.kind == "frames" else (c.n_frames * c.channels,)
        # Standardisation statistics: part of the state dict, set from training windows by fit_scaler().
        self.register_buffer("mean", torch.zeros(stat_shape))
        self.register_buffer("std", torch.ones(stat_shape))
        if c.kind == "frames":
            self.frame_mlp = _mlp([c.channels * c.context, *c.frame_layers], c.dropout)
            width = c.frame_layers[-1] if c.frame_layers else c.channels * c.context
            pooled = width * (2 if c.pooling == "meanstd" else 1)
        else:
            self.frame_mlp = nn.Sequential()
            pooled = c.n_frames * c.channels
        self.head = _mlp([pooled, *c.head_layers], c.dropout)
        self.out = nn.Linear(c.head_layers[-1] if c.head_layers else pooled, c.dim)

    def _frames(self, x: torch.Tensor) -> torch.Tensor:
        c = self.config
        if x.ndim != 2 or x.shape[1] != c.input_dim:
            raise ValueError(f"expected input of shape (batch, {c.input_dim}), got {tuple(x.shape)}")
        return with_deltas(x.reshape(x.shape[0], c.n_frames, c.n_mfcc), c.deltas)

    @torch.no_grad()
    def fit_scaler(self, x: torch.Tensor) -> None:
        """Set the standardisation statistics from raw training vectors ``(n, N * n_mfcc)``."""
        frames = self._frames(x.float())
        flat = frames.reshape(-1, self.config.channels) if self.config.kind == "frames" else frames.flatten(1)
        self.mean.copy_(flat.mean(0))
        self.std.copy_(std_over(flat, 0).clamp_min(1e-3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.config
        if x.ndim != 2 or x.shape[1] != c.input_dim:
            raise ValueError(f"expected input of shape (batch, {c.input_dim}), got {tuple(x.shape)}")
        return self.forward_frames(x.float().reshape(x.shape[0], c.n_frames, c.n_mfcc))

    def forward_frames(self, raw: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` on frames ``(batch, n, n_mfcc)``; with kind ``frames``, ``n`` may be any length.

        Training may feed crops of the windows (``TrainConfig.crop_frames``): the per-frame layers and the
        pooling do not depend on where or how many frames there are.
        """
        learned = self.learned_frames(raw)
        if not self.config.stats_weight or not self.with_stats:
            return learned
        return with_statistics([learned], raw, self.config.stats_weight)

    def learned_frames(self, raw: torch.Tensor) -> torch.Tensor:
        """The learned part of the output (unit length, ``dim`` values) of frames ``(batch, n, n_mfcc)``."""
        c = self.config
        frames = with_deltas(raw, c.deltas)
        if c.kind == "flat":
            z = (frames.flatten(1) - self.mean) / self.std
        else:
            z = (frames - self.mean) / self.std
            if c.context > 1:
                half = c.context // 2
                padded = torch.cat([z[:, :1].expand(-1, half, -1), z, z[:, -1:].expand(-1, half, -1)], 1)
                z = padded.unfold(1, c.context, 1).transpose(2, 3).flatten(2)  # (B, N, context * C)
            h = self.frame_mlp(z)
            if c.pooling == "mean":
                z = h.mean(1)
            elif c.pooling == "max":
                z = h.amax(1)
            else:
                z = torch.cat([h.mean(1), std_over(h, 1)], dim=1)
        return F.normalize(self.out(self.head(z)), dim=1)


def with_statistics(learned: list[torch.Tensor], raw: torch.Tensor, weight: float) -> torch.Tensor:
    """Unit-length parts (members' learned outputs) and the input's mean+std statistics as one unit vector.

    Each of the ``m`` parts is scaled by ``sqrt((1 - w) / m)`` and the statistics by ``sqrt(w)``, so the
    cosine of two outputs is ``(1 - w) * mean(cos(part)) + w * cos(statistics)``.
    """
    share = ((1.0 - weight) / len(learned)) ** 0.5
    parts = [part * share for part in learned]
    if weight:
        stats = F.normalize(torch.cat([raw.mean(1), raw.std(1, correction=0)], dim=1), dim=1)
        parts.append(stats * weight**0.5)
    return torch.cat(parts, dim=1)


class Ensemble(nn.Module):
    """Branches of one shape trained with different seeds; the cosine of their outputs is the mean of theirs.

    One seed's branch moves the retrieval metrics by about as much as the gate's margin; the average of a
    few does not, so the served model and every held-out judgement of the recipe are ensembles. Design:
    docs/training.md ("Seeds and the ensemble").
    """

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.members = nn.ModuleList(Encoder(config.member) for _ in range(config.members))

    def branches(self) -> list[Encoder]:
        """The members, typed."""
        return [m for m in self.members if isinstance(m, Encoder)]

    @classmethod
    def of(cls, members: list[Encoder]) -> Ensemble:
        """The ensemble of trained members (one shape), sharing their weights."""
        config = members[0].config.model_copy(update={"members": len(members)})
        ensemble = cls(config)
        ensemble.members = nn.ModuleList(members)
        return ensemble

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.config
        if x.ndim != 2 or x.shape[1] != c.input_dim:
            raise ValueError(f"expected input of shape (batch, {c.input_dim}), got {tuple(x.shape)}")
        raw = x.float().reshape(x.shape[0], c.n_frames, c.n_mfcc)
        return with_statistics([m.learned_frames(raw) for m in self.branches()], raw, c.stats_weight)


def build_encoder(config: EncoderConfig) -> Encoder | Ensemble:
    """An untrained model of ``config``: one branch, or an ensemble of ``config.members`` branches."""
    return Encoder(config) if config.members == 1 else Ensemble(config)
