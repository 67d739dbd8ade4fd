"""Gradient refinement of presets through the synth's proxy (``training.match``, ``training.evaluate``).

:class:`ProxyRefiner`: ``steps`` of Adam on the multi-resolution STFT distance between the
proxy's relaxed render (``training.proxy_loss.make_proxy_render``: calibration + JAX proxy,
categoricals as softmax mixtures) and the target, with respect to the learned parameters
(continuous ones through a logit, categorical ones as logits). Hard presets are taken at a few
snapshots; the caller re-renders them through the real engine and keeps the best (the proxy is
only a guide: what counts is the real synth's sound). Pitch and velocity are traced: refiners
of every note share one compiled step.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from training.config import DataConfig
from training.data import synth_of
from training.heads import hard_normalized, head_layout, relaxed_inputs
from training.proxy_loss import canonical_note

_LOGIT_CLIP = 1e-2  # continuous start values are kept this far from 0 and 1 (finite logits, live gradients)


@dataclass(frozen=True)
class RefineResult:
    """Snapshots of one refinement.

    Attributes:
        candidates: hard presets [S, B, n_params] (normalized, snapped), snapshot 0 = the start.
        steps: optimiser step of each snapshot, ``(0, ..., steps)``.
        proxy_distance: [S, B] relaxed proxy distance to the target at each snapshot.
        seconds: wall time of the optimisation (compilation excluded).
        compile_seconds: wall time spent compiling (0 when already compiled).
        snapshot_seconds: optimisation wall time spent when each snapshot was taken [S]
            (0 for the start).
    """

    candidates: np.ndarray
    steps: tuple[int, ...]
    proxy_distance: np.ndarray
    seconds: float
    compile_seconds: float
    snapshot_seconds: tuple[float, ...] = ()


@dataclass(frozen=True)
class DescentResult:
    """What :meth:`ProxyRefiner.descend` keeps: ``presets`` [B, n_params] (normalized, snapped),
    their proxy distance to the target [B] (the start's where no step improved on it; inf if
    even the start's was not finite), the descent's wall time and its compilation's."""

    presets: np.ndarray
    proxy_distance: np.ndarray
    seconds: float
    compile_seconds: float


# descend(): categoricals held at their choice (softmax of 60 x one-hot: exactly one-hot in
# float32), continuous values as close to the start as a finite logit allows
_HELD_CONFIDENCE = 60.0
_HELD_CLIP = 1e-4


class ProxyRefiner:
    """Gradient descent through the proxy for a batch of ``batch_size`` targets of one note.

    Args:
        data: data config of the run, with ``note`` set to the note the targets play.
        fft_sizes: FFT sizes of the multi-resolution STFT distance (the run's ``loss.fft_sizes``).
        batch_size: targets per call (one compiled shape; smaller batches are padded).
        lr: default Adam learning rate in logit space (0.3: measured on factory presets, 30 steps).
        categorical_confidence: start logits of each categorical parameter are this value times
            the one-hot of its current choice (3.0: about 0.8 probability on it for 5 choices),
            so gradients can still move probability to other choices.

    Compiles once per (data config, fft sizes, batch size) on first use; use :func:`get_refiner`
    to share compiled refiners.
    """

    def __init__(self, data: DataConfig, fft_sizes: Sequence[int], batch_size: int = 1, lr: float = 0.3,
                 categorical_confidence: float = 3.0):
        if batch_size < 1:
            raise ValueError(f"batch_size: expected an integer >= 1, got {batch_size!r}")
        self.data = data
        self.layout = head_layout(synth_of(data).spec, data.frozen)
        self.channels = synth_of(data).channels
        self.batch_size = int(batch_size)
        self.lr = float(lr)
        self.confidence = float(categorical_confidence)
        self.fft_sizes = tuple(int(n) for n in fft_sizes)
        self._compiled: set[str] = set()
        # pitch and velocity are traced: refiners of every note share one compiled step
        self._step, self._opt = _refine_step(canonical_note(data), self.fft_sizes, self.lr)
        self._pitch = jnp.full((self.batch_size,), int(data.note), jnp.int32)
        self._velocity = jnp.full((self.batch_size,), int(data.velocity), jnp.int32)

    # -- variables <-> presets
    def _variables(self, normalized: np.ndarray, confidence: float, clip: float = _LOGIT_CLIP):
        layout = self.layout
        n = np.asarray(normalized, dtype=np.float64)
        cont = np.clip(n[:, list(layout.continuous)], clip, 1.0 - clip)
        z = jnp.asarray(np.log(cont) - np.log1p(-cont), jnp.float32)
        choices = layout.spec.category_of(n)
        logits = tuple(jnp.asarray(confidence * np.eye(k)[choices[:, i]], jnp.float32)
                       for i, k in zip(layout.categorical, layout.n_choices))
        return z, logits

    def _hard(self, variables) -> np.ndarray:
        z, logits = variables
        n = hard_normalized(self.layout, {"continuous": jax.nn.sigmoid(z), "logits": tuple(logits)})
        return np.asarray(self.layout.spec.snap_normalized(np.asarray(n, np.float64)), dtype=np.float64)

    def _pad(self, x: np.ndarray) -> np.ndarray:
        if len(x) > self.batch_size:
            raise ValueError(f"ProxyRefiner: got {len(x)} targets, expected at most batch_size={self.batch_size}")
        return np.concatenate([x, np.repeat(x[-1:], self.batch_size - len(x), axis=0)]) if len(x) < self.batch_size \
            else x

    def _checked(self, start, target, steps) -> tuple[np.ndarray, np.ndarray]:
        """``(start [B, n_params] float64, target [B, C, T] float32)``; ValueError naming what is wrong."""
        if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
            raise ValueError(f"steps: expected an integer >= 0, got {steps!r}")
        start = np.asarray(start, dtype=np.float64)
        target = np.asarray(target, dtype=np.float32)
        b = len(start)
        if target.shape != (b, self.channels, self.data.n_samples):
            raise ValueError(f"target: expected audio [{b}, {self.channels}, {self.data.n_samples}], got {target.shape}")
        return start, target

    def _warm_up(self, variables, target, key) -> float:
        """Compile (by calling once) the step graph; returns the seconds it took (0 when compiled)."""
        t0 = time.perf_counter()
        if "step" not in self._compiled:
            jax.block_until_ready(self._step(variables, self._opt_state(variables), target, key, self._pitch,
                                             self._velocity))
            self._compiled.add("step")
        return time.perf_counter() - t0

    def _evaluate(self, variables, target, key):
        """(distance [B], proxy audio [B, C, T]) at ``variables``, through the step graph (its
        update is discarded)."""
        _, _, d, audio = self._step(variables, self._opt_state(variables), target, key, self._pitch, self._velocity)
        return d, audio

    def _opt_state(self, variables, lr: float | None = None):
        """Adam's state at ``variables`` with learning rate ``lr`` (the refiner's by default), the
        rate stored as a float32 array so every call has one signature (one compilation)."""
        state = self._opt.init(variables)
        state.hyperparams["learning_rate"] = jnp.asarray(self.lr if lr is None else lr, jnp.float32)
        return state

    def refine(self, start: np.ndarray, target: np.ndarray, steps: int, snapshots: int = 4,
               seed: int = 0, lr: float | None = None) -> RefineResult:
        """Refine presets ``start`` [B, n_params] towards ``target`` audio [B, C, T].

        ``snapshots`` hard presets are taken at evenly spaced steps (the last at ``steps``), plus
        the start itself (snapshot 0, exactly ``start``). The proxy's noise sources use one fixed
        key for all steps, so the objective is deterministic. ``lr`` overrides the refiner's
        learning rate (no recompilation). A non-finite distance stops the descent at the last
        finite snapshot.
        """
        start, target = self._checked(start, target, steps)
        b = len(start)
        key = jax.random.key(seed)
        variables = self._variables(self._pad(start), self.confidence)
        target_j = jnp.asarray(self._pad(target))
        compile_s = self._warm_up(variables, target_j, key)
        t0 = time.perf_counter()
        at = set(snapshot_steps(steps, snapshots)[1:])
        opt_state = self._opt_state(variables, lr)
        cands, snap_steps, dists, times = [start], [0], [], [0.0]
        last_good = variables

        def snapshot(k: int, v, d: np.ndarray) -> bool:
            nonlocal last_good
            if not np.all(np.isfinite(d)):
                return False
            times.append(time.perf_counter() - t0)
            cands.append(self._hard(v)[:b])
            snap_steps.append(k)
            dists.append(d)
            last_good = v
            return True

        finite = True
        for k in range(steps):  # the step at k returns the distance of the point after k updates
            new_variables, opt_state, d, _ = self._step(variables, opt_state, target_j, key, self._pitch,
                                                        self._velocity)
            d = np.asarray(d)[:b]
            if k == 0:
                dists.append(d)
            elif k in at and not snapshot(k, variables, d):
                finite = False
                break
            variables = new_variables
        if finite and steps:
            d = np.asarray(self._evaluate(variables, target_j, key)[0])[:b]
            snapshot(steps, variables, d)
        if not dists:  # steps == 0
            dists.append(np.asarray(self._evaluate(variables, target_j, key)[0])[:b])
        return RefineResult(np.stack(cands), tuple(snap_steps), np.stack(dists), time.perf_counter() - t0, compile_s,
                            tuple(times))

    def descend(self, start: np.ndarray, target: np.ndarray, steps: int, seed: int = 0,
                lr: float | None = None) -> DescentResult:
        """Refine the continuous parameters of ``start`` [B, n_params] towards ``target`` audio
        [B, C, T] by ``steps`` Adam steps, categorical choices held (one-hot logits at confidence
        60: the relaxed render is the hard preset's), and keep for each target the point whose
        own proxy distance was lowest (the start included): ``steps + 1`` proxy renders with
        gradient per target, no real-engine render. Picking by the proxy matters: the last point
        alone is often worse in the plugin than the start (``README``, training section)."""
        start, target = self._checked(start, target, steps)
        b = len(start)
        key = jax.random.key(seed)
        variables = self._variables(self._pad(start), _HELD_CONFIDENCE, clip=_HELD_CLIP)
        target_j = jnp.asarray(self._pad(target))
        compile_s = self._warm_up(variables, target_j, key)
        t0 = time.perf_counter()
        opt_state = self._opt_state(variables, lr)
        best, best_d = start.copy(), np.full(b, np.inf)
        for k in range(steps + 1):  # the call at k returns the distance of the point after k updates
            new_variables, opt_state, d, _ = self._step(variables, opt_state, target_j, key, self._pitch,
                                                        self._velocity)
            d = np.asarray(d)[:b]
            better = np.isfinite(d) & (d < best_d)
            if better.any():
                best[better] = (start if k == 0 else self._hard(variables)[:b])[better]
                best_d[better] = d[better]
            if not np.all(np.isfinite(d)):
                break  # a non-finite point: keep the best finite one so far
            variables = new_variables
        return DescentResult(best, best_d, time.perf_counter() - t0, compile_s)

    def render(self, normalized: np.ndarray, seed: int = 0) -> np.ndarray:
        """Proxy render [B, C, T] of hard presets ``normalized`` (exact choices: one-hot logits at
        high confidence), through the already compiled refinement graph."""
        normalized = np.asarray(normalized, dtype=np.float64)
        b = len(normalized)
        variables = self._variables(self._pad(normalized), 60.0, clip=1e-7)
        dummy = jnp.zeros((self.batch_size, self.channels, self.data.n_samples), jnp.float32)
        key = jax.random.key(seed)
        self._warm_up(variables, dummy, key)
        return np.asarray(self._evaluate(variables, dummy, key)[1])[:b]


@functools.lru_cache(maxsize=8)
def _refine_step(data: DataConfig, fft_sizes: tuple[int, ...], lr: float):
    """(jitted ``step(variables, opt_state, target, key, pitch, velocity)``, optimiser) for a
    note-independent data config (:func:`training.proxy_loss.canonical_note`)."""
    import optax

    from diffsynth.losses import multi_resolution_stft_loss
    from diffsynth.parallel import batch_parallel
    from training.proxy_loss import make_proxy_render

    render_fn = make_proxy_render(data)
    layout = head_layout(synth_of(data).spec, data.frozen)
    opt = optax.inject_hyperparams(optax.adam)(learning_rate=lr)  # lr in the state: no recompile

    def per_row(variables, target, key, pitch, velocity):
        z, logits = variables
        prediction = {"continuous": jax.nn.sigmoid(z), "logits": tuple(logits)}
        normalized, probs = relaxed_inputs(layout, prediction)
        audio = render_fn(normalized, probs, key, pitch, velocity)
        return multi_resolution_stft_loss(audio, target, fft_sizes=fft_sizes).mean(axis=-1), audio  # [B], [B, C, T]

    # the rows over the local devices (on CPU one per core: the proxy's per-sample loops on every core)
    per_row = batch_parallel(per_row, (True, True, False, True, True))

    def distance(variables, target, key, pitch, velocity):
        d, audio = per_row(variables, target, key, pitch, velocity)
        return jnp.sum(d), (d, audio)

    def step(variables, opt_state, target, key, pitch, velocity):
        # One graph does everything (distance, proxy audio and the update from that point):
        # compiling the proxy's gradient is the dominant cost of a first use (~2 min on 2
        # cores), and a second, forward-only graph would add ~40% to it.
        (_, (d, audio)), grads = jax.value_and_grad(distance, has_aux=True)(variables, target, key, pitch, velocity)
        grads = jax.tree.map(lambda g: jnp.where(jnp.isfinite(g), g, 0.0), grads)
        updates, opt_state = opt.update(grads, opt_state, variables)
        return optax.apply_updates(variables, updates), opt_state, d, audio

    return jax.jit(step), opt


def snapshot_steps(steps: int, snapshots: int) -> tuple[int, ...]:
    """Steps at which :meth:`ProxyRefiner.refine` takes its snapshots: 0 (the start), then
    ``snapshots`` evenly spaced steps ending at ``steps`` (fewer when ``steps < snapshots``)."""
    if steps <= 0:
        return (0,)
    return (0, *sorted({int(round(steps * (k + 1) / max(snapshots, 1))) for k in range(max(snapshots, 1))} - {0}))


@functools.lru_cache(maxsize=8)
def get_refiner(data: DataConfig, fft_sizes: tuple[int, ...], batch_size: int = 1,
                categorical_confidence: float = 3.0) -> ProxyRefiner:
    """A shared :class:`ProxyRefiner` (compiled graphs are reused across calls in a process; pass
    the learning rate to :meth:`ProxyRefiner.refine`)."""
    return ProxyRefiner(data, fft_sizes, batch_size, categorical_confidence=categorical_confidence)


