"""Training state, optimiser and checkpoints: what ``fit`` writes and every consumer restores.

* :class:`TrainState`: Flax train state plus the feature standardisation of the training set.
* :func:`make_optimizer`, :func:`create_train_state`.
* :class:`Checkpoints`: ``latest`` (resume point) and ``best`` orbax checkpoints of a run.
* Data parallelism (``jax.sharding``): :func:`make_mesh` (a 1-D device mesh over the batch axis,
  ``jax.distributed`` for several hosts), :func:`replicate` (parameters and optimiser state on
  every device), :func:`shard_batch` (a batch split over the devices). Orbax saves and restores
  the state with the shardings of the restore target, so a checkpoint written on N devices
  resumes on any other number.
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

from training.config import Config, ConfigError, OptimConfig, RunConfig
from training.features import feature_stats
from training.heads import HeadLayout, note_features
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
    note = note_features(jnp.full((example.shape[0],), cfg.data.note), jnp.full((example.shape[0],), cfg.data.velocity))
    params = model.init(jax.random.key(cfg.run.seed), example, note)["params"]
    tx, _ = make_optimizer(cfg.optim)
    return TrainState.create(apply_fn=model.apply, params=params, tx=tx, feature_mean=mean, feature_std=std)


def network_outputs(apply_fn: Callable, params: Any, feature_mean: Any, feature_std: Any, feature_fn: Callable,
                    audio: jax.Array, note: jax.Array) -> dict[str, Any]:
    """The network's raw outputs (heads) for real-engine audio [B, C, T] playing ``note`` [B, 2]
    (:func:`training.heads.note_features`): the one prediction function (training steps,
    validation, evaluation, matching). Features are standardised with the training set's
    statistics."""
    features = (feature_fn(audio.astype(jnp.float32)) - feature_mean) / feature_std
    return apply_fn({"params": params}, features, note)


# ------------------------------------------------------------------------------ data parallelism
BATCH_AXIS = "batch"


def make_mesh(run: RunConfig, batch_size: int) -> jax.sharding.Mesh:
    """The device mesh of a run: ``run.devices`` local devices of every process (0: all, or as
    many as split ``batch_size`` evenly; on CPU :mod:`diffsynth.runtime` makes one per core) on one
    axis, :data:`BATCH_AXIS`. With ``run.distributed`` it first joins the job
    (``jax.distributed.initialize``; must precede any JAX computation). ConfigError unless
    ``batch_size`` divides by the mesh's device count."""
    if run.distributed and not jax.distributed.is_initialized():
        jax.distributed.initialize(coordinator_address=run.coordinator_address or None,
                                   num_processes=run.num_processes or None,
                                   process_id=None if run.process_id < 0 else run.process_id)
    local = jax.local_devices()
    if run.devices > len(local):
        raise ConfigError(f"run.devices: expected at most the {len(local)} local {local[0].platform} device(s) of "
                          f"this process, got {run.devices}; set run.devices = 0 to use all of them")
    per_process = run.devices or len(local)
    by_process: dict[int, list] = {}
    for d in jax.devices():
        by_process.setdefault(d.process_index, []).append(d)
    while not run.devices and per_process > 1 and batch_size % (per_process * len(by_process)):
        per_process -= 1  # "all devices": as many as split the batch evenly
    devices = [d for p in sorted(by_process) for d in by_process[p][:per_process]]
    if batch_size % len(devices):
        raise ConfigError(f"optim.batch_size: expected a multiple of the {len(devices)} devices the batch is split "
                          f"over, got {batch_size}; change optim.batch_size or run.devices")
    return jax.sharding.Mesh(np.asarray(devices), (BATCH_AXIS,))


def replicated(mesh: jax.sharding.Mesh) -> jax.sharding.NamedSharding:
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())


def batch_sharded(mesh: jax.sharding.Mesh) -> jax.sharding.NamedSharding:
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(BATCH_AXIS))


def replicate(tree: Any, mesh: jax.sharding.Mesh) -> Any:
    """``tree`` (e.g. a TrainState) with every array replicated on every device of ``mesh``."""
    return jax.device_put(tree, replicated(mesh))


def shard_batch(arrays: dict[str, np.ndarray], mesh: jax.sharding.Mesh) -> dict[str, jax.Array]:
    """Host arrays ``[B, ...]`` (the global batch, the same in every process) split over the
    mesh's devices along the first axis; each process sends only its own rows."""
    sharding = batch_sharded(mesh)
    out = {}
    for k, v in arrays.items():
        v = np.asarray(v, dtype=jax.dtypes.canonicalize_dtype(np.asarray(v).dtype))
        if jax.process_count() == 1:
            out[k] = jax.device_put(v, sharding)
        else:
            n, i = jax.process_count(), jax.process_index()
            per = v.shape[0] // n
            out[k] = jax.make_array_from_process_local_data(sharding, v[i * per:(i + 1) * per], v.shape)
    return out


class CheckpointError(ConfigError):
    """A checkpoint that cannot be restored: damaged (truncated or missing files) or written for
    another model than the run's config.json describes (``mismatch``). The message names the
    folder, the cause (one line, not orbax's pages) and the fix."""

    def __init__(self, which: str, step: int | None, directory: Path, error: BaseException):
        self.which, self.step, self.directory = which, step, directory
        causes = []
        e: BaseException | None = error
        while e is not None and len(causes) < 8:
            causes.append(e)
            e = e.__cause__ or e.__context__
        text = " ".join(str(c) for c in causes)
        self.mismatch = any(k in text for k in ("not compatible with the stored shape", "tree structure",
                                                 "do not match", "Missing keys", "Unexpected keys"))
        root = next((c for c in reversed(causes) if str(c).strip()), error)
        cause = str(root).strip().splitlines()[0] if str(root).strip() else type(root).__name__
        cause = cause if len(cause) <= 240 else cause[:240] + "..."
        where = f"{directory}" + (f" (step {step})" if step is not None else "")
        if self.mismatch:
            what = (f"the {which} checkpoint in {where} does not fit the model that the run's config.json "
                    f"describes ({cause}): config.json was edited, or the checkpoint comes from another run")
            fix = ("restore the run's original config.json, or retrain: python -m training.fit --fresh with "
                   "the config you want")
        else:
            what = f"the {which} checkpoint in {where} is damaged or incomplete ({cause})"
            other = "latest" if which == "best" else "best"
            fix = (f"use the other checkpoint (--checkpoint {other}) if it is intact, or retrain: "
                   "python -m training.fit --fresh with the run's config")
        self.what, self.fix = what, fix
        super().__init__(f"{what}; fix: {fix}")


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
        which = Path(mngr.directory).name
        step = None
        try:
            step = mngr.latest_step()
            if step is None:
                return None
            out = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(state),
                                                              meta=ocp.args.JsonRestore()))
            best = float(out["meta"]["best"])
        except Exception as e:  # noqa: BLE001  (orbax / tensorstore raise plain Exceptions)
            raise CheckpointError(which, step, Path(mngr.directory), e) from e
        return out["state"], best

    def restore_latest(self, state: TrainState) -> tuple[TrainState, float]:
        got = self._restore(self.latest, state)
        return got if got is not None else (state, math.inf)

    def restore_best(self, state: TrainState) -> TrainState:
        got = self._restore(self.best, state)
        return got[0] if got is not None else state
