"""Training state, optimiser and checkpoints: what ``fit`` writes and every consumer restores.

* :class:`TrainState`: Flax train state plus the feature standardisation of the training set.
* :func:`make_optimizer`, :func:`create_train_state`.
* :class:`Checkpoints`: ``latest`` (resume point) and ``best`` orbax checkpoints of a run.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax.training import train_state

from training.config import Config, OptimConfig
from training.features import feature_stats
from training.heads import HeadLayout
from training.models import make_model


class TrainState(train_state.TrainState):
    """Flax train state plus the feature standardisation fitted on the training set."""

    feature_mean: jax.Array
    feature_std: jax.Array


# ------------------------------------------------------------------------------ construction
@functools.lru_cache(maxsize=16)
def make_optimizer(cfg: OptimConfig) -> tuple[optax.GradientTransformation, Callable[[Any], Any]]:
    """(optax transformation, learning-rate schedule) from ``[optim]``."""
    warmup = cfg.effective_lr_warmup_steps
    if cfg.lr_schedule == "cosine":
        lr = optax.warmup_cosine_decay_schedule(0.0, cfg.lr, max(warmup, 1), max(cfg.steps, 2),
                                                end_value=cfg.lr * 0.05)
    else:
        lr = optax.linear_schedule(0.0, cfg.lr, warmup) if warmup else optax.constant_schedule(cfg.lr)
    opt = optax.adamw(lr, weight_decay=cfg.weight_decay) if cfg.optimizer == "adamw" else optax.adam(lr)
    parts = [optax.clip_by_global_norm(cfg.grad_clip_norm)] if cfg.grad_clip_norm > 0 else []
    return optax.chain(*parts, opt), lr


def create_train_state(cfg: Config, layout: HeadLayout, feature_fn: Callable, train_audio: np.ndarray) -> TrainState:
    """Model, parameters (from run.seed), optimiser and feature statistics."""
    model = make_model(cfg.model, layout)
    mean, std = feature_stats(feature_fn, train_audio)
    example = (feature_fn(jnp.asarray(train_audio[:2], jnp.float32)) - mean) / std
    params = model.init(jax.random.key(cfg.run.seed), example)["params"]
    tx, _ = make_optimizer(cfg.optim)
    return TrainState.create(apply_fn=model.apply, params=params, tx=tx, feature_mean=mean, feature_std=std)


class Checkpoints:
    """``latest`` (resume point) and ``best`` (by validation distance) orbax checkpoints."""

    def __init__(self, root: Path):
        opts = dict(max_to_keep=1, enable_async_checkpointing=False, create=True)
        self.latest = ocp.CheckpointManager(root.absolute() / "latest", options=ocp.CheckpointManagerOptions(**opts))
        self.best = ocp.CheckpointManager(root.absolute() / "best", options=ocp.CheckpointManagerOptions(**opts))

    @staticmethod
    def _save(mngr: ocp.CheckpointManager, step: int, state: TrainState, best: float) -> None:
        if mngr.latest_step() == step:
            return
        mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                meta=ocp.args.JsonSave({"best": best, "step": step})))
        mngr.wait_until_finished()

    def save_latest(self, step: int, state: TrainState, best: float) -> None:
        self._save(self.latest, step, state, best)

    def save_best(self, step: int, state: TrainState, best: float) -> None:
        self._save(self.best, step, state, best)

    def _restore(self, mngr: ocp.CheckpointManager, state: TrainState) -> tuple[TrainState, float] | None:
        step = mngr.latest_step()
        if step is None:
            return None
        out = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(state),
                                                          meta=ocp.args.JsonRestore()))
        return out["state"], float(out["meta"]["best"])

    def restore_latest(self, state: TrainState) -> tuple[TrainState, float]:
        got = self._restore(self.latest, state)
        return got if got is not None else (state, math.inf)

    def restore_best(self, state: TrainState) -> TrainState:
        got = self._restore(self.best, state)
        return got[0] if got is not None else state
