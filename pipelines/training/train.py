"""Training one branch on a triplet dataset: seeded, deterministic, early-stopped on validation precision.

How a batch is scored, augmentation and early stopping: docs/training.md ("Training loop").
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from pipelines.model.encoder import Encoder, Ensemble
from pipelines.training.config import TrainConfig
from pipelines.training.loss import margin_loss, pairwise_cosine_distance
from pipelines.training.metrics import retrieval_table, summarise
from pipelines.training.triplets import semi_hard_negatives

log = logging.getLogger(__name__)


class TrainingFailed(RuntimeError):
    """The run cannot give a usable model (for example the loss became NaN); nothing is registered."""


@dataclass
class WindowBank:
    """All training vectors in one matrix, found by (track_id, offset)."""

    matrix: np.ndarray  # float32 (m, D)
    row: dict[tuple[str, float], int]

    @classmethod
    def build(
        cls,
        track_ids: list[str],
        first: np.ndarray,
        extra_ids: Sequence[str] = (),
        extra_offsets: Sequence[float] | np.ndarray = (),
        extra: np.ndarray | None = None,
    ) -> WindowBank:
        rows = {(t, 0.0): i for i, t in enumerate(track_ids)}
        mats = [np.asarray(first, np.float32)]
        if extra is not None and len(extra):
            base = len(track_ids)
            for j, (t, o) in enumerate(zip(extra_ids, extra_offsets, strict=True)):
                rows[(t, float(o))] = base + j
            mats.append(np.asarray(extra, np.float32))
        return cls(np.concatenate(mats), rows)


@dataclass
class TrainResult:
    model: Encoder
    history: pd.DataFrame  # epoch, loss, active (share of triplets with loss > 0), val_map@10, val_p@10
    best_epoch: int
    stopped_early: bool


EpochCallback = Callable[[dict[str, float]], None]


def embed(model: Encoder | Ensemble, vectors: np.ndarray, batch: int = 256) -> np.ndarray:
    """Unit-length embeddings of front-end vectors, in eval mode, without gradients."""
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(vectors), batch):
            out.append(model(torch.from_numpy(np.array(vectors[i : i + batch], np.float32))).numpy())
    return np.concatenate(out) if out else np.zeros((0, model.config.out_dim), np.float32)


class _Validation:
    """The validation ranking of one branch, its inputs gathered once (they are the same every epoch)."""

    def __init__(self, bank: WindowBank, fit: pd.DataFrame, val: pd.DataFrame, by: str) -> None:
        self.n_fit, self.n_val = len(fit), len(val)
        both = pd.concat([fit, val], ignore_index=True)
        self.vectors = bank.matrix[[bank.row[(t, 0.0)] for t in both["track_id"]]]
        # By source, the validation sources' own tracks are no candidates: finding them measures the source.
        cand = both if by == "track" else fit
        self.n_cand = len(cand)
        self.val_ids, self.val_styles = list(val["track_id"]), list(val["style"])
        self.cand_ids, self.cand_styles = list(cand["track_id"]), list(cand["style"])

    def __call__(self, model: Encoder) -> dict[str, float]:
        """Validation tracks ranked against the fit tracks (and, by track, the other validation tracks)."""
        if not self.n_val:
            return {"val_map@10": float("nan"), "val_p@10": float("nan")}
        e = embed(model, self.vectors)
        table = retrieval_table(
            e[self.n_fit :], self.val_ids, self.val_styles, e[: self.n_cand], self.cand_ids, self.cand_styles
        )
        s = summarise(table)
        return {"val_map@10": s["map@10"], "val_p@10": s["p@10"]}


@dataclass(frozen=True)
class _Batch:
    """One batch of triplet rows as indices: the pool's bank rows and each row's anchor/positive/negative slot."""

    pool: np.ndarray  # bank rows of the distinct (track, offset) windows, sorted by (track, offset)
    styles: np.ndarray  # style code of each pool member
    a: np.ndarray
    p: np.ndarray
    n: np.ndarray


def _index_batches(bank: WindowBank, triplets: pd.DataFrame) -> dict[int, _Batch]:
    """Every batch of ``triplets`` as index arrays into ``bank`` (done once, not per step).

    The pool of a batch is its distinct (track, offset) windows in sorted order, so slots and the order of
    the embedded pool are those of sorting the (track, offset) pairs.
    """
    keys = sorted(bank.row)
    rank = np.full(len(bank.matrix), -1, np.int64)
    rank[[bank.row[k] for k in keys]] = np.arange(len(keys))
    row_of_rank = np.array([bank.row[k] for k in keys], np.int64)
    roles = ("anchor", "positive", "negative")
    ids = np.concatenate([triplets[r].to_numpy(object) for r in roles])
    offs = np.concatenate([triplets[f"{r}_offset"].to_numpy(np.float64) for r in roles])
    styles = np.concatenate([triplets[f"{r}_style"].to_numpy(object) for r in roles])
    id_code, id_uniq = pd.factorize(ids)
    off_code, off_uniq = pd.factorize(offs)
    lut = np.full((len(id_uniq), len(off_uniq)), -1, np.int64)
    for i, j in set(zip(id_code.tolist(), off_code.tolist(), strict=True)):
        lut[i, j] = bank.row[(str(id_uniq[i]), float(off_uniq[j]))]  # a window the bank lacks: KeyError
    rows = lut[id_code, off_code]
    style_code, _ = pd.factorize(styles)
    style_of_row = np.full(len(bank.matrix), -1, np.int64)
    style_of_row[rows] = style_code
    m = len(triplets)
    ranks = rank[rows].reshape(3, m)
    batch = triplets["batch"].to_numpy(np.int64)
    order = np.argsort(batch, kind="stable")  # rows of a batch in their file order, as a groupby gives them
    bounds = np.flatnonzero(np.diff(batch[order])) + 1
    out: dict[int, _Batch] = {}
    for idx in np.split(order, bounds) if m else []:
        r = ranks[:, idx]
        pool_ranks = np.unique(r)
        slots = np.searchsorted(pool_ranks, r)
        pool = row_of_rank[pool_ranks]
        out[int(batch[idx[0]])] = _Batch(pool, style_of_row[pool], slots[0], slots[1], slots[2])
    return out


def train_branch(
    config: TrainConfig,
    bank: WindowBank,
    fit: pd.DataFrame,
    val: pd.DataFrame,
    triplets: pd.DataFrame,
    on_epoch: EpochCallback | None = None,
) -> TrainResult:
    """Train a fresh branch on ``triplets`` (one fold's rows of the triplet dataset).

    ``fit`` and ``val`` (track_id, style) are the training and validation tracks; ``bank`` holds every
    window the triplets refer to and the first-N-frames vector of every fit/val track.
    """
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    try:
        return _train(config, bank, fit, val, triplets, rng, on_epoch)
    finally:
        torch.set_num_threads(prev_threads)


def _train(
    config: TrainConfig,
    bank: WindowBank,
    fit: pd.DataFrame,
    val: pd.DataFrame,
    triplets: pd.DataFrame,
    rng: np.random.Generator,
    on_epoch: EpochCallback | None,
) -> TrainResult:
    model = Encoder(config.encoder)
    model.with_stats = config.stats_in_training
    fit_ids = set(fit["track_id"])
    fit_vectors = bank.matrix[sorted(i for (t, _o), i in bank.row.items() if t in fit_ids)]
    model.fit_scaler(torch.from_numpy(fit_vectors))
    n_mfcc, n_frames, crop = config.encoder.n_mfcc, config.encoder.n_frames, config.crop_frames
    if crop and config.encoder.kind != "frames":
        raise ValueError("crop_frames needs the per-frame branch (encoder kind 'frames')")
    coef_sd = fit_vectors.reshape(-1, n_mfcc).std(0) if config.augment_channel else None
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    n_batches = int(triplets["batch"].max()) + 1 if len(triplets) else 0
    if n_batches == 0:
        raise TrainingFailed("the triplet dataset is empty")
    total = min(config.epochs * config.batches_per_epoch, n_batches)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + np.cos(np.pi * min(s, total) / total)))
    batches = _index_batches(bank, triplets)
    validate = _Validation(bank, fit, val, config.val_by)

    history: list[dict[str, float]] = []
    best = (-np.inf, {k: v.clone() for k, v in model.state_dict().items()}, 0)
    stopped_early = False
    epochs = -(-total // config.batches_per_epoch)
    for epoch in range(epochs):
        model.train()
        losses, active = [], []
        for b in range(epoch * config.batches_per_epoch, min((epoch + 1) * config.batches_per_epoch, total)):
            batch = batches.get(b)
            if batch is None:
                continue
            x = bank.matrix[batch.pool]
            if coef_sd is not None:
                shift = rng.standard_normal((len(batch.pool), 1, n_mfcc)) * coef_sd * config.augment_channel
                x = (x.reshape(len(batch.pool), -1, n_mfcc) + shift.astype(np.float32)).reshape(len(batch.pool), -1)
            if 0 < crop < n_frames:  # a random run of `crop` frames of each window, drawn per step
                start = rng.integers(0, n_frames - crop + 1, size=len(batch.pool))
                frames = x.reshape(len(batch.pool), n_frames, n_mfcc)
                x_crop = frames[np.arange(len(batch.pool))[:, None], start[:, None] + np.arange(crop)]
                emb = model.forward_frames(torch.from_numpy(x_crop))
            else:
                emb = model(torch.from_numpy(x))
            dist = pairwise_cosine_distance(emb)
            a, p, n = batch.a, batch.p, batch.n
            if config.mining == "semi-hard" and epoch >= config.mine_after_epochs:
                n = semi_hard_negatives(dist.detach().numpy(), batch.styles, a, p, config.margin, rng)
            if config.mining == "batch-all":
                loss, share = _batch_all(dist, batch.styles, a, p, config.margin)
            else:
                d_ap, d_an = dist[a, p], dist[a, n]
                loss = margin_loss(d_ap, d_an, config.margin)
                share = float((d_ap - d_an + config.margin > 0).float().mean())
            if not torch.isfinite(loss):
                raise TrainingFailed(f"the loss became {loss.item()} in epoch {epoch + 1}, batch {b}")
            opt.zero_grad()
            loss.backward()
            opt.step()
            schedule.step()
            losses.append(loss.item())
            active.append(share)
        record = {"epoch": epoch + 1, "loss": float(np.mean(losses)), "active": float(np.mean(active))}
        record |= validate(model)
        record["lr"] = float(schedule.get_last_lr()[0])
        history.append(record)
        if on_epoch is not None:
            on_epoch(record)
        score = record["val_map@10"]
        if np.isnan(score) or score > best[0]:
            best = (
                score if not np.isnan(score) else -np.inf,
                {k: v.clone() for k, v in model.state_dict().items()},
                epoch + 1,
            )
        if epoch + 1 >= config.min_epochs and epoch + 1 - best[2] >= config.patience_epochs:
            stopped_early = epoch + 1 < epochs
            break
    model.load_state_dict(best[1])
    model.with_stats = True
    model.eval()
    log.info("trained %d epochs, kept epoch %d (val mAP@10 %.3f)", len(history), best[2], best[0])
    return TrainResult(model=model, history=pd.DataFrame(history), best_epoch=best[2], stopped_early=stopped_early)


def _batch_all(
    dist: torch.Tensor, styles: np.ndarray, a: np.ndarray, p: np.ndarray, margin: float
) -> tuple[torch.Tensor, float]:
    """Every listed (anchor, positive) against every pool member of another style; mean over active ones."""
    other = torch.from_numpy(styles[a][:, None] != styles[None, :])  # (pairs, pool): valid negatives
    hinge = torch.relu(dist[a, p][:, None] - dist[a] + margin) * other
    active = hinge > 0
    n_active = int(active.sum())
    loss = hinge.sum() / max(n_active, 1)
    return loss, n_active / max(int(other.sum()), 1)
