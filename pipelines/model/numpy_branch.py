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
        c = self.config
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != c.input_dim:
            raise ValueError(f"expected input of shape (batch, {c.input_dim}), got {x.shape}")
        raw = x.reshape(x.shape[0], c.n_frames, c.n_mfcc)
        frames = _deltas(raw, c.deltas)
        if c.kind == "flat":
            z = (frames.reshape(x.shape[0], -1) - self.mean) / self.std
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
        learned = _normalise(_mlp(z, self.head) @ w_out.T + b_out)
        if not c.stats_weight:
            return learned.astype(np.float32, copy=False)
        stats = _normalise(np.concatenate([raw.mean(1), raw.std(1)], axis=1))
        w = c.stats_weight
        return np.concatenate([learned * (1.0 - w) ** 0.5, stats * w**0.5], axis=1).astype(np.float32, copy=False)


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
    branch: NumpyBranch
    batch_size: int = 512

    def embed(self, vectors: np.ndarray) -> np.ndarray:
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.input_dim:
            raise ValueError(f"expected vectors of shape (n, {self.input_dim}), got {vectors.shape}")
        if not len(vectors):
            return np.zeros((0, self.dim), np.float32)
        out = [self.branch(vectors[i : i + self.batch_size]) for i in range(0, len(vectors), self.batch_size)]
        return l2_normalise(np.concatenate(out))
