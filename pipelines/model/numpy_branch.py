"""The trained branch's forward pass in numpy: embeds a query without importing torch.

The weights come from the registered model's state dict (saved by the model cache as ``.npz``) and the
layer shapes from its :class:`~pipelines.model.config.EncoderConfig`. It mirrors
:meth:`pipelines.model.encoder.Encoder.forward` in eval mode (dropout off, statistics on); the cache only
keeps these weights after checking that this forward pass gives the torch model's outputs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.model.config import EncoderConfig
from pipelines.model.embedder import l2_normalise

_LINEAR = re.compile(r"^(frame_mlp|head)\.(\d+)\.weight$")
_MEMBER = re.compile(r"^members\.(\d+)\.(.+)$")


def _normalise(x: np.ndarray) -> np.ndarray:
    """``torch.nn.functional.normalize(x, dim=1)``: rows over max(norm, 1e-12)."""
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _deltas(frames: np.ndarray, order: int) -> np.ndarray:
    """:func:`pipelines.model.encoder.with_deltas` in numpy."""
    out = [frames]
    cur = frames
    for _ in range(order):
        padded = np.concatenate([cur[:, :1], cur, cur[:, -1:]], axis=1)
        cur = (padded[:, 2:] - padded[:, :-2]) / np.float32(2.0)
        out.append(cur)
    return np.concatenate(out, axis=2)


@dataclass(frozen=True)
class NumpyBranch:
    """The branch's layers as arrays: ``(weight, bias)`` of each linear layer, each followed by a ReLU."""

    config: EncoderConfig
    mean: np.ndarray
    std: np.ndarray
    frame_mlp: tuple[tuple[np.ndarray, np.ndarray], ...]
    head: tuple[tuple[np.ndarray, np.ndarray], ...]
    out: tuple[np.ndarray, np.ndarray]

    @classmethod
    def from_state(cls, config: EncoderConfig, state: dict[str, np.ndarray]) -> NumpyBranch:
        """From a state dict's arrays (names as in :class:`~pipelines.model.encoder.Encoder`)."""
        layers: dict[str, list[tuple[int, tuple[np.ndarray, np.ndarray]]]] = {"frame_mlp": [], "head": []}
        for name in state:
            m = _LINEAR.match(name)
            if m:
                prefix = name.removesuffix(".weight")
                pair = (_f32(state[name]), _f32(state[prefix + ".bias"]))
                layers[m.group(1)].append((int(m.group(2)), pair))
        return cls(
            config=config,
            mean=_f32(state["mean"]),
            std=_f32(state["std"]),
            frame_mlp=tuple(p for _, p in sorted(layers["frame_mlp"], key=lambda t: t[0])),
            head=tuple(p for _, p in sorted(layers["head"], key=lambda t: t[0])),
            out=(_f32(state["out.weight"]), _f32(state["out.bias"])),
        )

    def arrays(self) -> dict[str, np.ndarray]:
        """The state dict's arrays again (what :meth:`from_state` reads), for ``np.savez``."""
        state = {"mean": self.mean, "std": self.std, "out.weight": self.out[0], "out.bias": self.out[1]}
        for prefix, pairs in (("frame_mlp", self.frame_mlp), ("head", self.head)):
            for i, (w, b) in enumerate(pairs):
                state[f"{prefix}.{i}.weight"], state[f"{prefix}.{i}.bias"] = w, b
        return state

    @classmethod
    def load(cls, config: EncoderConfig, path: Path) -> NumpyBranch:
        with np.load(path, allow_pickle=False) as npz:
            return cls.from_state(config, {k: npz[k] for k in npz.files})

    def save(self, path: Path) -> None:
        arrays: dict[str, Any] = self.arrays()
        with path.open("wb") as f:
            np.savez(f, **arrays)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        raw = _frames(self.config, x)
        learned = self.learned(raw)
        if not self.config.stats_weight:
            return learned.astype(np.float32, copy=False)
        return _with_statistics([learned], raw, self.config.stats_weight)

    def learned(self, raw: np.ndarray) -> np.ndarray:
        """:meth:`pipelines.model.encoder.Encoder.learned_frames` on frames ``(batch, N, n_mfcc)``."""
        c = self.config
        frames = _deltas(raw, c.deltas)
        if c.kind == "flat":
            z = (frames.reshape(raw.shape[0], -1) - self.mean) / self.std
        else:
            z = (frames - self.mean) / self.std
            if c.context > 1:
                half = c.context // 2
                n = z.shape[1]
                padded = np.concatenate([np.repeat(z[:, :1], half, 1), z, np.repeat(z[:, -1:], half, 1)], axis=1)
                z = np.concatenate([padded[:, j : j + n] for j in range(c.context)], axis=2)
            h = _mlp(z, self.frame_mlp)
            if c.pooling == "mean":
                z = h.mean(1)
            elif c.pooling == "max":
                z = h.max(1)
            else:
                z = np.concatenate([h.mean(1), h.std(1, ddof=1)], axis=1)
        w_out, b_out = self.out
        return _normalise(_mlp(z, self.head) @ w_out.T + b_out)


@dataclass(frozen=True)
class NumpyEnsemble:
    """:class:`pipelines.model.encoder.Ensemble` in numpy: its members' branches, cosines averaged."""

    config: EncoderConfig
    members: tuple[NumpyBranch, ...]

    @classmethod
    def from_state(cls, config: EncoderConfig, state: dict[str, np.ndarray]) -> NumpyEnsemble:
        """From the ensemble's state dict (each member's arrays under ``members.<i>.``)."""
        member = config.member
        parts: list[dict[str, np.ndarray]] = [{} for _ in range(config.members)]
        for name, value in state.items():
            m = _MEMBER.match(name)
            if m is None or int(m.group(1)) >= config.members:
                raise ValueError(f"unexpected array {name!r} in the weights of a {config.members}-member ensemble")
            parts[int(m.group(1))][m.group(2)] = value
        return cls(config, tuple(NumpyBranch.from_state(member, p) for p in parts))

    def arrays(self) -> dict[str, np.ndarray]:
        return {f"members.{i}.{k}": v for i, b in enumerate(self.members) for k, v in b.arrays().items()}

    def __call__(self, x: np.ndarray) -> np.ndarray:
        raw = _frames(self.config, x)
        learned = [b.learned(raw) for b in self.members]
        return _with_statistics(learned, raw, self.config.stats_weight)


Model = NumpyBranch | NumpyEnsemble


def from_state(config: EncoderConfig, state: dict[str, np.ndarray]) -> Model:
    """The numpy model of a state dict: one branch or an ensemble, as ``config.members`` says."""
    return (NumpyBranch if config.members == 1 else NumpyEnsemble).from_state(config, state)


def load(config: EncoderConfig, path: Path) -> Model:
    """Weights written by :func:`save` (an ``.npz`` of the state dict's arrays)."""
    with np.load(path, allow_pickle=False) as npz:
        return from_state(config, {k: npz[k] for k in npz.files})


def save(model: Model, path: Path) -> None:
    arrays: dict[str, Any] = model.arrays()
    with path.open("wb") as f:
        np.savez(f, **arrays)


def _frames(config: EncoderConfig, x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] != config.input_dim:
        raise ValueError(f"expected input of shape (batch, {config.input_dim}), got {x.shape}")
    return x.reshape(x.shape[0], config.n_frames, config.n_mfcc)


def _with_statistics(learned: list[np.ndarray], raw: np.ndarray, weight: float) -> np.ndarray:
    """:func:`pipelines.model.encoder.with_statistics` in numpy."""
    share = ((1.0 - weight) / len(learned)) ** 0.5
    parts = [part * share for part in learned]
    if weight:
        parts.append(_normalise(np.concatenate([raw.mean(1), raw.std(1)], axis=1)) * weight**0.5)
    return np.concatenate(parts, axis=1).astype(np.float32, copy=False)


def _f32(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32)


def _mlp(z: np.ndarray, layers: tuple[tuple[np.ndarray, np.ndarray], ...]) -> np.ndarray:
    for w, b in layers:
        z = np.maximum(z @ w.T + b, 0.0)
    return z


@dataclass(frozen=True)
class NumpyEmbedder:
    """The :class:`~pipelines.model.embedder.Embedder` of a registered version, run by :class:`NumpyBranch`."""

    version: str
    feature_version: str
    dim: int
    input_dim: int
    branch: Model
    batch_size: int = 512

    def embed(self, vectors: np.ndarray) -> np.ndarray:
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.input_dim:
            raise ValueError(f"expected vectors of shape (n, {self.input_dim}), got {vectors.shape}")
        if not len(vectors):
            return np.zeros((0, self.dim), np.float32)
        out = [self.branch(vectors[i : i + self.batch_size]) for i in range(0, len(vectors), self.batch_size)]
        return l2_normalise(np.concatenate(out))
