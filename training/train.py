"""Training loop: ``train_and_evaluate(config)`` with named ``loss_fn``, ``train_step``, ``eval_step``.

A run lives in ``<run.runs_dir>/<run.name>/``:

    config.json            the resolved config (a rerun must match it, [eval] and workers aside)
    layout.json            which parameters the heads predict
    checkpoints/latest/    orbax, the last saved step (resume point)
    checkpoints/best/      orbax, the best step by validation distance
    metrics/train.csv      step, losses, weights, lr, steps/s
    metrics/val.csv        step, validation losses and distance
    tb/                    TensorBoard event files (tensorboardX)
    summary.json           final real-plugin evaluation (see ``training.evaluate_core``)

Rerunning the same command resumes from ``checkpoints/latest`` (after a kill -9 as well). Batch
order depends only on (run.seed, step) and there is no other randomness in a step except the
proxy's noise key ``fold_in(seed, step)``, so on CPU a resumed run reproduces the uninterrupted
one.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from proxies.files import atomic_write_bytes, atomic_write_json
from training import evaluate_core
from training.config import Config, ConfigError, LossConfig, with_defaults
from training.data import Dataset, EngineRenderer, build_dataset, iterate_batches, synth_of
from training.features import make_feature_fn
from training.heads import HeadLayout, hard_normalized, head_layout, note_features, targets_from_normalized
from training.losses import FlowFns, param_loss, schedule_weights, spectral_loss
from training.models import flow_method
from training.proxy_loss import make_distance_fn, make_proxy_render
from training.state import (CheckpointError, Checkpoints, TrainState, batch_sharded, create_train_state, make_mesh,
                            make_optimizer, network_outputs, replicate, replicated, shard_batch)

TRAIN_COLUMNS = ("step", "loss", "param_loss", "param_mse", "param_ce", "param_acc", "spectral", "w_param",
                 "w_spectral", "lr", "grad_norm", "steps_per_s", "wall_s")
VAL_COLUMNS = ("step", "val_param_loss", "val_param_mse", "val_param_acc", "val_distance", "val_distance_kind",
               "best")


def predict(state: TrainState, params: Any, feature_fn: Callable, batch: dict[str, jax.Array]) -> dict[str, Any]:
    """Network outputs for a batch's real-engine audio [B, C, T] and notes
    (:func:`training.state.network_outputs`)."""
    note = note_features(batch["pitch"], batch["velocity"])
    return network_outputs(state.apply_fn, params, state.feature_mean, state.feature_std, feature_fn,
                           batch["audio"], note)


# ------------------------------------------------------------------------------ steps
def loss_fn(params: Any, state: TrainState, batch: dict[str, jax.Array], weights: jax.Array, key: jax.Array,
            *, loss_cfg: LossConfig, layout: HeadLayout, feature_fn: Callable, render_fn: Callable | None,
            distance_fn: Callable | None, mesh: jax.sharding.Mesh | None = None
            ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Weighted parameter + spectral loss of one batch. ``weights`` = [w_param, w_spectral];
    the spectral term is computed only when ``render_fn`` is given (its weight is non-zero), on
    ``loss.spectral_batch_size`` sounds of the batch (all when 0; :func:`spectral_rows`), split
    over the ``mesh``'s devices (the run's data-parallel mesh)."""
    prediction = predict(state, params, feature_fn, batch)
    targets = targets_from_normalized(layout, batch["normalized"])
    lp, aux = param_loss(prediction, targets, loss_cfg.categorical_weight,
                         _flow_fns(state, params, prediction, jax.random.fold_in(key, 1)))
    loss = weights[0] * lp
    if render_fn is not None:
        rows = spectral_rows(batch["audio"].shape[0], loss_cfg.spectral_batch_size, mesh)
        head = jax.tree.map(lambda x: x[rows], prediction)
        ls, aux_s = spectral_loss(head, batch["audio"][rows], layout, render_fn, distance_fn, key,
                                  balance_strength=weights[1] if loss_cfg.balance_spectral_grads else None,
                                  straight_through=loss_cfg.categorical_relaxation == "straight_through",
                                  spectral_params=loss_cfg.spectral_params,
                                  notes=(batch["pitch"][rows], batch["velocity"][rows]),  # each sound at its own note
                                  mesh=mesh)
        loss = loss + weights[1] * ls
        aux = {**aux, **aux_s}
    else:
        aux = {**aux, "spectral": jnp.full((), jnp.nan)}
    return loss, {**aux, "param_loss": lp}


def spectral_rows(batch_size: int, spectral_batch_size: int,
                  mesh: jax.sharding.Mesh | None) -> slice | np.ndarray:
    """Which rows of a batch get the spectral loss: ``spectral_batch_size`` of them (all when 0), the
    first ones of each device's share of the batch (the first ones of the batch on one device), so
    that every device renders its own rows and none are moved. The batch's first rows come as a
    slice, not an index array: a gather compiles to other XLA fusions, whose float rounding
    differs, and the shipped models (``training/shipped/``) are remade bit for bit only with the
    slice their weights were trained with."""
    k = min(spectral_batch_size or batch_size, batch_size)
    d = mesh.size if mesh is not None else 1
    if d <= 1 or batch_size % d or k % d:
        return slice(0, k)
    return (np.arange(d)[:, None] * (batch_size // d) + np.arange(k // d)[None, :]).reshape(-1)


def _flow_fns(state: TrainState, params: Any, prediction: dict[str, Any], key: jax.Array) -> FlowFns | None:
    """The flow head's velocity field and decoder bound to ``params`` (None for other heads)."""
    if "flow_h" not in prediction:
        return None
    bound = functools.partial(state.apply_fn, {"params": params})
    return FlowFns(velocity=lambda *a: bound(*a, method=flow_method("velocity")),
                   decode=lambda *a: bound(*a, method=flow_method("decode")), key=key)


def train_step(state: TrainState, batch: dict[str, jax.Array], weights: jax.Array, key: jax.Array,
               **static: Any) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimiser step; returns the new state and scalar metrics."""
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, state, batch, weights, key,
                                                                   **static)
    state = state.apply_gradients(grads=grads)
    return state, {**aux, "loss": loss, "grad_norm": optax.tree.norm(grads)}


def eval_step(state: TrainState, batch: dict[str, jax.Array], *, loss_cfg: LossConfig, layout: HeadLayout,
              feature_fn: Callable) -> tuple[dict[str, jax.Array], jax.Array]:
    """Parameter-loss metrics of a validation batch and the hard presets [B, n_params] predicted."""
    prediction = predict(state, state.params, feature_fn, batch)
    lp, aux = param_loss(prediction, targets_from_normalized(layout, batch["normalized"]), loss_cfg.categorical_weight,
                         _flow_fns(state, state.params, prediction, jax.random.key(0)))
    return {**aux, "param_loss": lp}, hard_normalized(layout, prediction)


def step_loss_config(cfg: Config) -> LossConfig:
    """The loss settings a train step runs with: ``loss.spectral_params`` resolved to the synth's
    default when the config leaves it empty (an empty tuple inside the step would stop every
    gradient of the spectral loss)."""
    return dataclasses.replace(cfg.loss, spectral_params=cfg.spectral_params)


@functools.lru_cache(maxsize=16)
def compiled_steps(loss_cfg: LossConfig, layout: HeadLayout, feature_fn: Callable, render_fn: Callable | None,
                   distance_fn: Callable | None, mesh: jax.sharding.Mesh | None = None
                   ) -> tuple[Callable, Callable | None, Callable]:
    """Jitted (parameter-only train step, full train step or None, eval step), cached so that
    runs in one process with the same settings compile once. With a ``mesh`` the train steps
    are data parallel: state replicated, the batch split over the mesh's batch axis
    (:func:`training.state.shard_batch`), the gradient an all-reduce XLA inserts."""
    static = dict(loss_cfg=loss_cfg, layout=layout, feature_fn=feature_fn, distance_fn=distance_fn, mesh=mesh)
    shardings: dict[str, Any] = {}
    if mesh is not None:
        rep_, data_ = replicated(mesh), batch_sharded(mesh)
        shardings = dict(in_shardings=(rep_, data_, rep_, rep_), out_shardings=(rep_, rep_))
    step_param = jax.jit(functools.partial(train_step, render_fn=None, **static), donate_argnums=0, **shardings)
    step_full = jax.jit(functools.partial(train_step, render_fn=render_fn, **static), donate_argnums=0,
                        **shardings) if render_fn is not None else None
    eval_fn = jax.jit(functools.partial(eval_step, loss_cfg=loss_cfg, layout=layout, feature_fn=feature_fn))
    return step_param, step_full, eval_fn


# ------------------------------------------------------------------------------ the loop
def train_and_evaluate(cfg: Config, *, progress: bool = True, stop_after_step: int | None = None,
                       log: Callable[[str], None] = print) -> dict[str, Any] | None:
    """Build (or reuse) the dataset, train (resuming if a checkpoint exists), evaluate through the
    real plugin and write ``summary.json``. Returns the summary (None if stopped early by
    ``stop_after_step``, a hook the tests use to simulate an interrupted run)."""
    t_start = time.perf_counter()
    mesh = make_mesh(cfg.run, cfg.optim.batch_size)  # first: jax.distributed, and the batch/device check
    primary = jax.process_index() == 0  # writes the metrics and the summary
    run_dir = cfg.run_dir
    _prepare_run_dir(cfg, run_dir)
    synth = synth_of(cfg.data)
    layout = head_layout(synth.spec, cfg.data.frozen)
    (run_dir / "layout.json").write_text(json.dumps(layout.describe(), indent=1))

    dataset = build_dataset(cfg.data, progress=progress, log=log, n_eval_factory=cfg.eval.n_factory)
    data_seconds = time.perf_counter() - t_start
    train = dataset.training_split(cfg.data.train_on_gallery)
    if len(train) > len(dataset.train):
        log(f"[fit] training on {len(train)} sounds: {len(dataset.train)} training presets at their random notes "
            f"and the same presets at note {cfg.data.note} (the gallery; data.train_on_gallery)")
    feature_fn = make_feature_fn(cfg.features, cfg.data.sample_rate)
    state = replicate(create_train_state(cfg, layout, feature_fn, train.audio), mesh)
    n_params = sum(x.size for x in jax.tree.leaves(state.params))
    log(f"[fit] {cfg.model.kind} on {cfg.features.kind}: {n_params:,} weights; predicts "
        f"{layout.n_continuous} continuous + {len(layout.n_choices)} categorical parameters; "
        f"loss schedule {cfg.loss.schedule}")

    ckpt = Checkpoints(run_dir / "checkpoints")
    state, best = _resume(ckpt, state, run_dir, log)
    start_step = int(state.step)
    if start_step:
        log(f"[fit] resuming {run_dir} from step {start_step} (best val distance so far {best:.4g})")
    logger = MetricLogger(run_dir, start_step) if primary else _NullLogger()
    if mesh.size > 1:
        log(f"[fit] data parallel over {mesh.size} devices ({jax.process_count()} process(es)): "
            f"{cfg.optim.batch_size // mesh.size} sounds per device per step")

    needs_spectral = any(schedule_weights(s, cfg.loss)[1] > 0 for s in (cfg.optim.steps - 1, start_step))
    render_fn = make_proxy_render(cfg.data) if needs_spectral else None
    distance_fn = make_distance_fn(cfg.loss) if needs_spectral else None
    loss_cfg = step_loss_config(cfg)
    step_param, step_full, eval_fn = compiled_steps(loss_cfg, layout, feature_fn, render_fn, distance_fn, mesh)
    _, lr_schedule = make_optimizer(cfg.optim)
    base_key = jax.random.key(cfg.run.seed + 1)

    batches = iterate_batches(len(train), cfg.optim.batch_size, cfg.run.seed, start_step)
    renderer = EngineRenderer(cfg.data).__enter__()  # validation and final evaluation share its workers
    bar = _bar(start_step, cfg.optim.steps, progress)
    try:
        t_last, steps_since, acc = time.perf_counter(), 0, None
        for step in range(start_step, cfg.optim.steps):
            idx = np.sort(next(batches))
            batch = shard_batch({"audio": train.audio[idx], "normalized": train.normalized[idx],
                                 "pitch": train.pitch[idx].astype(np.int32),
                                 "velocity": train.velocity[idx].astype(np.int32)}, mesh)
            w_param, w_spec = schedule_weights(step, cfg.loss)
            fn = step_full if w_spec > 0 else step_param
            state, metrics = fn(state, batch, jnp.asarray([w_param, w_spec], jnp.float32),
                                jax.random.fold_in(base_key, step))
            acc = metrics if acc is None else jax.tree.map(jnp.add, acc, metrics)  # no host sync
            steps_since += 1
            done = step + 1
            bar.update(1)
            if done % cfg.optim.log_every == 0 or done == cfg.optim.steps:
                means = {k: float(v) / steps_since for k, v in jax.device_get(acc).items()}
                sps = steps_since / max(time.perf_counter() - t_last, 1e-9)
                if not math.isfinite(means["loss"]):
                    raise FloatingPointError(f"training loss became {means['loss']} by step {done}; expected a "
                                             "finite loss. Lower optim.lr or raise optim.grad_clip_norm")
                row = {k: means[k] for k in ("loss", "param_loss", "param_mse", "param_ce", "param_acc",
                                             "spectral", "grad_norm")}
                row.update(step=done, w_param=w_param, w_spectral=w_spec, lr=float(lr_schedule(step)),
                           steps_per_s=sps, wall_s=time.perf_counter() - t_start)
                logger.train(row)
                bar.set_postfix(loss=f"{row['loss']:.4f}", sps=f"{sps:.2f}")
                t_last, steps_since, acc = time.perf_counter(), 0, None
            paused = False
            if done % cfg.optim.eval_every == 0 or done == cfg.optim.steps:
                val = validate(state, dataset, cfg, eval_fn, renderer if cfg.eval.val_distance == "plugin" else None)
                is_best = val["val_distance"] < best
                if is_best:
                    best = val["val_distance"]
                    ckpt.save_best(done, state, best)
                logger.val({**val, "step": done, "best": int(is_best)})
                paused = True
            if done % cfg.optim.checkpoint_every == 0 or done == cfg.optim.steps:
                ckpt.save_latest(done, state, best)
                paused = True
            if stop_after_step is not None and done >= stop_after_step:
                ckpt.save_latest(done, state, best)
                return None
            if paused and steps_since == 0:  # keep evaluation and checkpoint time out of steps/s
                t_last = time.perf_counter()
        bar.close()
        train_seconds = time.perf_counter() - t_start - data_seconds

        try:
            best_state = ckpt.restore_best(state)
        except CheckpointError as e:
            if e.mismatch:
                raise
            log(f"[fit] warning: {e.what}; evaluating the final state (step {int(state.step)}) instead")
            best_state = state
        log(f"[fit] evaluating the best checkpoint (step {int(best_state.step)}) through the real {synth.name} engine")
        predictor = evaluate_core.Predictor(cfg, layout, best_state.params, best_state.feature_mean,
                                            best_state.feature_std, feature_fn)
        evaluation = evaluate_core.evaluate(predictor, dataset, cfg, renderer=renderer, log=log)
    finally:
        bar.close()
        logger.close()
        renderer.__exit__(None, None, None)
    summary = {
        "eval": evaluation["eval"],
        "eval_methods": evaluation["eval_methods"],
        "eval_unavailable": evaluation.get("eval_unavailable", {}),
        "timing": {**evaluation["timing"], "data_s": data_seconds, "train_s": train_seconds,
                   "render_stats": dataset.manifest.get("render_stats")},
        "best_step": int(best_state.step),
        "best_val_distance": best,
        "dataset": str(dataset.root),
        "wall_seconds": time.perf_counter() - t_start,
        "config": cfg.to_dict(),
    }
    if primary:
        _write_json_atomic(run_dir / "summary.json", summary)
    log(evaluate_core.format_table(summary))
    log(f"[fit] wrote {run_dir / 'summary.json'} ({summary['wall_seconds']:.0f} s)")
    return summary


def validate(state: TrainState, dataset: Dataset, cfg: Config, eval_fn: Callable,
             renderer: EngineRenderer | None) -> dict[str, Any]:
    """Validation losses; ``val_distance`` is the re-rendered multi-resolution STFT distance
    (``eval.val_distance = "plugin"``) or the parameter loss."""
    val = dataset.val
    sums: dict[str, float] = {}
    preds = []
    bs = cfg.eval.batch_size
    for a in range(0, len(val), bs):
        idx = np.arange(a, min(a + bs, len(val)))
        idx_padded = np.pad(idx, (0, bs - len(idx)), mode="edge")  # one compiled shape
        m, pred = eval_fn(state, {"audio": jnp.asarray(val.audio[idx_padded]),
                                  "normalized": jnp.asarray(val.normalized[idx_padded]),
                                  "pitch": jnp.asarray(val.pitch[idx_padded], jnp.int32),
                                  "velocity": jnp.asarray(val.velocity[idx_padded], jnp.int32)})
        # per-batch means over padded rows: weight by the real rows (a small bias on the last batch)
        for k, v in jax.device_get(m).items():
            sums[k] = sums.get(k, 0.0) + float(v) * len(idx)
        preds.append(np.asarray(pred)[:len(idx)])
    out: dict[str, Any] = {f"val_{k}": v / len(val) for k, v in sums.items() if k in
                           ("param_loss", "param_mse", "param_acc")}
    if renderer is not None:
        audio, ok = renderer.render(np.concatenate(preds), val.pitch, val.velocity)
        d = evaluate_core.audio_metrics(audio[ok], val.audio[ok].astype(np.float32), cfg.data.sample_rate)
        out.update(val_distance=float(np.mean(d["mss"])), val_distance_kind="plugin_mss")
    else:
        out.update(val_distance=out["val_param_loss"], val_distance_kind="param_loss")
    return out


# ------------------------------------------------------------------------------ logging
class _NullLogger:
    """What processes other than process 0 log (nothing)."""

    def train(self, row: dict[str, Any]) -> None:
        pass

    val = train

    def close(self) -> None:
        pass


class MetricLogger:
    """CSV files (truncated to the resume step, so curves stay identical) and TensorBoard."""

    def __init__(self, run_dir: Path, start_step: int):
        from tensorboardX import SummaryWriter

        self.dir = run_dir / "metrics"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.files = {}
        for name, cols in (("train", TRAIN_COLUMNS), ("val", VAL_COLUMNS)):
            path = self.dir / f"{name}.csv"
            rows = _read_csv(path)
            rows = [r for r in rows if int(r["step"]) <= start_step]
            tmp = path.with_suffix(".csv.tmp")
            with open(tmp, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=cols)
                w.writeheader()
                w.writerows(rows)
            os.replace(tmp, path)
            f = open(path, "a", newline="")
            self.files[name] = (f, csv.DictWriter(f, fieldnames=cols))
        self.tb = SummaryWriter(str(run_dir / "tb"), purge_step=start_step + 1 if start_step else None)

    def _write(self, name: str, row: dict[str, Any]) -> None:
        f, w = self.files[name]
        w.writerow({k: _fmt(row.get(k, "")) for k in w.fieldnames})
        f.flush()
        for k, v in row.items():
            if k != "step" and isinstance(v, (int, float)) and math.isfinite(v):
                self.tb.add_scalar(f"{name}/{k}", v, int(row["step"]))
        self.tb.flush()

    def train(self, row: dict[str, Any]) -> None:
        self._write("train", row)

    def val(self, row: dict[str, Any]) -> None:
        self._write("val", row)

    def close(self) -> None:
        for f, _ in self.files.values():
            f.close()
        self.tb.close()


def _fmt(v: Any) -> Any:
    return f"{v:.7g}" if isinstance(v, float) else v


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [r for r in csv.DictReader(f) if r.get("step", "").isdigit()]


def _bar(start: int, total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=start, unit="step", desc="train", disable=not enabled, dynamic_ncols=True)


# ------------------------------------------------------------------------------ run directory
_RESUME_EXEMPT = {("eval", None), ("data", "workers"), ("data", "cache_dir"), ("run", "runs_dir"),
                  ("data", "backend"), ("data", "ray_address"), ("run", "devices"), ("run", "distributed"),
                  ("run", "coordinator_address"), ("run", "num_processes"), ("run", "process_id"),
                  ("optim", "log_every"), ("optim", "eval_every"), ("optim", "checkpoint_every")}


def _prepare_run_dir(cfg: Config, run_dir: Path) -> None:
    """Create the run directory (marked as a run: :data:`training.cli.RUN_MARKER`), or check that
    an existing one is a run made by the same config. A folder holding files fit did not write
    is refused, never written into."""
    from training.cli import RUN_MARKER, is_run_dir

    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"{run_dir} is a file, not a run folder; expected run.runs_dir/run.name to be a folder "
                          "that training.fit creates. Fix: pick another run.name (--set run.name=...) or "
                          "run.runs_dir")
    if run_dir.is_dir() and any(run_dir.iterdir()) and not (is_run_dir(run_dir) or (run_dir / "config.json").is_file()):
        raise ConfigError(f"{run_dir} exists and holds files that training.fit did not write (no "
                          f"{RUN_MARKER}, no config.json); expected a new or empty folder, or a run. Fix: pick "
                          "another run.name (--set run.name=...) or run.runs_dir; nothing was changed there")
    made = [d for d in (run_dir, *run_dir.parents) if not d.exists()]  # folders this call creates
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        _check_and_write_config(cfg, run_dir)
    except BaseException:
        for d in made:  # deepest first: what was created here goes again (a full disk, a bad config.json)
            shutil.rmtree(d, ignore_errors=True)
        raise


def _check_and_write_config(cfg: Config, run_dir: Path) -> None:
    from training.cli import RUN_MARKER

    path = run_dir / "config.json"
    new = cfg.to_dict()
    if path.is_file():
        try:
            old = json.loads(path.read_bytes().decode("utf-8"))
            if not isinstance(old, dict):
                raise ValueError("not a JSON object")
        except ValueError as e:
            raise ConfigError(f"{path} is damaged ({str(e).splitlines()[0][:200]}); expected the config.json fit "
                              f"wrote. Fix: restore it, or start over with --fresh (deletes {run_dir})") from None
        old = with_defaults(old)  # keys added since the run was made: their defaults
        diffs = [f"{s}.{k}: {old.get(s, {}).get(k)!r} -> {v!r}" for s, table in new.items() for k, v in table.items()
                 if (s, None) not in _RESUME_EXEMPT and (s, k) not in _RESUME_EXEMPT
                 and old.get(s, {}).get(k) != v]
        if diffs and (run_dir / "checkpoints").exists():
            raise ConfigError(f"{run_dir} holds a run with a different config ({'; '.join(diffs[:5])}); "
                              f"expected the same config to resume. Fix: pick a new run.name (--set run.name=...) "
                              f"or start over with --fresh (deletes {run_dir})")
    _write_json_atomic(path, new)
    marker = run_dir / RUN_MARKER
    if not marker.is_file():
        atomic_write_bytes(marker, b"a run folder written by python -m training.fit (fit --fresh may delete it)\n")


def _write_json_atomic(path: Path, obj: Any) -> None:
    atomic_write_json(path, obj, default=_json_default)


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def reset_run(run_dir: Path) -> None:
    """Delete a run directory (tests and ``--fresh``): only a folder fit made
    (:func:`training.cli.is_run_dir`); anything else is refused with a ConfigError naming it.
    A folder that does not exist is nothing to delete."""
    from training.cli import RUN_MARKER, is_run_dir

    run_dir = Path(run_dir)
    if not os.path.lexists(run_dir):
        return
    if not is_run_dir(run_dir):
        what = "a file" if not run_dir.is_dir() or run_dir.is_symlink() else "a folder that is not a run"
        raise ConfigError(f"--fresh: {run_dir} is {what} (no {RUN_MARKER} marker, no config.json + checkpoints/ "
                          "written by training.fit); refusing to delete it. Fix: check run.runs_dir and run.name "
                          "(--set run.name=...), or move that folder away yourself")
    shutil.rmtree(run_dir)


def _resume(ckpt: Checkpoints, state: TrainState, run_dir: Path,
            log: Callable[[str], None]) -> tuple[TrainState, float]:
    """The state to resume from: ``latest``; when ``latest`` is damaged, ``best`` (said, and the
    damaged step moved aside to ``checkpoints/damaged-latest-<step>``). A checkpoint that does not
    fit the model, or two damaged ones, raise CheckpointError naming the fix."""
    try:
        return ckpt.restore_latest(state)
    except CheckpointError as e:
        if e.mismatch:
            raise ConfigError(f"{e.what}. Fix: rerun with the config the run was trained with, or start over "
                              f"with --fresh (deletes {run_dir})") from None
        damaged = e
    try:
        got = ckpt._restore(ckpt.best, state)
    except CheckpointError as e:
        raise ConfigError(f"{damaged.what}, and {e.what}. Fix: start over with --fresh (deletes {run_dir})") from None
    if got is None:
        raise ConfigError(f"{damaged.what}, and there is no best checkpoint to fall back on. Fix: start over with "
                          f"--fresh (deletes {run_dir})")
    if damaged.step is not None:
        src = Path(ckpt.latest.directory) / str(damaged.step)
        if src.is_dir():
            os.replace(src, Path(ckpt.latest.directory).parent / f"damaged-latest-{damaged.step}")
        ckpt.latest.reload()
    log(f"[fit] warning: {damaged.what}; resuming from the best checkpoint (step {int(got[0].step)}) instead "
        f"(the damaged one was moved to {Path(ckpt.latest.directory).parent}/damaged-latest-{damaged.step})")
    return got
