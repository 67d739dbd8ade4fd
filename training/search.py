"""Improving a preset for one target sound: gradient refinement through the proxy and black-box
search (CMA-ES) through the real plugin. Used by ``training.match`` and ``training.evaluate``.

* :class:`ProxyRefiner`: ``steps`` of Adam on the multi-resolution STFT distance between the
  proxy's relaxed render (``training.proxy_loss.make_proxy_render``: calibration + JAX proxy,
  categoricals as softmax mixtures) and the target, with respect to the learned parameters
  (continuous ones through a logit, categorical ones as logits). Hard presets are taken at a
  few snapshots; the caller re-renders them through the real plugin and keeps the best (the
  proxy is only a guide: what counts is the plugin's sound).
* :func:`cma_search`: CMA-ES (the ``cma`` package) over the learned parameters in [0, 1],
  every candidate rendered by the real plugin and scored by the multi-resolution STFT distance,
  at a fixed render budget per target. Several targets run in lockstep so each batch of renders
  fills the worker pool.
* :class:`NoteRenderer`: the real engine through ``training.data.EngineRenderer``, each preset
  at its own MIDI note, with restarts after failures.

Value spaces: everything here is *normalized* plugin values ``[B, n_params]`` in [0, 1]; the
search space of CMA-ES is a re-parameterisation of the learned parameters (see
:func:`encode_search` / :func:`decode_search`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from training.config import DataConfig
from training.data import EngineRenderer, synth_of
from training.heads import HeadLayout, hard_normalized, head_layout, relaxed_inputs
from training.proxy_loss import canonical_note

#: ``render(normalized [N, n_params], rows [N]) -> (audio [N, C, T] float32, ok [N] bool)``: the
#: real engine playing the note of target ``rows[i]``.
RenderFn = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]

_LOGIT_CLIP = 1e-2  # continuous start values are kept this far from 0 and 1 (finite logits, live gradients)


# ------------------------------------------------------------------------------ plugin at notes
class NoteRenderer(EngineRenderer):
    """:class:`training.data.EngineRenderer` that plays a given MIDI note per preset.

    ``render_at(normalized [N, n_params], notes [N]) -> (audio [N, C, T], ok [N])``, one engine
    batch with a note per preset. Presets that failed (after the pool's
    own retry in a fresh worker) or came back non-finite are tried again in a fresh pool (see
    :meth:`render_at`). Velocity, hold and duration come from the data config. :attr:`failures`
    keeps the reason of every failed attempt, :attr:`restarts` counts pool restarts.
    """

    def __init__(self, cfg: DataConfig, workers: int | None = None, log: Callable[[str], None] | None = None):
        super().__init__(cfg, workers)
        self._base = cfg
        self._log = log
        self.failures: list[str] = []
        self.restarts = 0
        self.culprits: list[np.ndarray] = []  # presets that failed alone in a fresh pool

    def __enter__(self) -> "NoteRenderer":
        super().__enter__()
        engine = self._engine
        render_batch = engine.render

        def recording(*args: Any, **kwargs: Any):
            audio, failures = render_batch(*args, **kwargs)
            reasons = [str(getattr(f, "reason", f)) for f in failures or ()]
            self.failures.extend(reasons)
            if reasons and self._log is not None:
                self._log(f"[render] {len(reasons)} of {len(audio)} {self.synth.name} render(s) failed: {reasons[0]}")
            return audio, failures

        self._engine = engine._replace(render=recording)  # failure reasons, for the reports
        return self

    def render_at(self, normalized: np.ndarray, notes: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        normalized = np.asarray(normalized, dtype=np.float64)
        notes = np.broadcast_to(np.asarray(notes, dtype=np.int64), (len(normalized),))
        audio = np.zeros((len(normalized), self.channels, self._base.n_samples), dtype=np.float32)
        ok = np.zeros(len(normalized), dtype=bool)
        self._render_rows(normalized, notes, np.arange(len(normalized)), audio, ok)
        if not ok.all():
            # A failed or non-finite render may have left a worker's plugin in a state where every
            # later render comes back NaN: start fresh workers and try the bad rows again, then,
            # if a few are still bad, once more one at a time (a preset that itself makes NaN
            # cannot spoil the others' renders).
            self._restart(f"{int((~ok).sum())} of {len(ok)} render(s) failed or were not finite")
            self._render_rows(normalized, notes, np.flatnonzero(~ok), audio, ok)
            if not ok.all():
                self._restart(f"{int((~ok).sum())} render(s) still bad")
                if (~ok).sum() <= 8:
                    for i in np.flatnonzero(~ok):
                        self._render_rows(normalized, notes, np.array([i]), audio, ok)
                        if not ok[i]:
                            self.culprits.append(normalized[i].copy())
                            self._restart(None)
        return audio, ok

    def _render_rows(self, normalized: np.ndarray, notes: np.ndarray, rows: np.ndarray, audio: np.ndarray,
                     ok: np.ndarray) -> None:
        if len(rows):
            audio[rows], ok[rows] = self.render(normalized[rows], notes[rows])

    def _restart(self, why: str | None) -> None:
        """Replace the worker pool by a fresh one."""
        if why is not None and self._log is not None:
            self._log(f"[render] {why}: restarting the {self.synth.name} engine")
        self.restarts += 1
        self.__exit__(None, None, None)
        self.__enter__()


def rms_db(audio: np.ndarray) -> np.ndarray:
    """RMS level in dBFS [N] of audio [N, C, T] (all channels and samples; -inf for silence)."""
    a = np.asarray(audio, dtype=np.float64)
    ms = np.mean(np.square(a.reshape(len(a), -1)), axis=1)
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(ms)


def score_mss(audio: np.ndarray, target: np.ndarray, ok: np.ndarray, sample_rate: int,
              min_level_db: np.ndarray | float | None = None) -> np.ndarray:
    """Multi-resolution STFT distance [N] of plugin renders against their targets (the ``mss`` of
    ``training.evaluate_core.audio_metrics``); failed or non-finite renders score ``inf``.

    ``min_level_db`` (scalar or [N], dBFS): renders whose RMS level (:func:`rms_db`) is below it
    also score ``inf``. The distance alone prefers silence to a wrong sound for short targets
    padded with silence (measured: a 0.14 s bell, where 30 refinement steps reached a silent
    preset); a search for a preset the user can hear must not take that way out.
    """
    from training.evaluate_core import audio_metrics

    d = np.asarray(audio_metrics(audio, target, sample_rate)["mss"], dtype=np.float64)
    good = np.asarray(ok) & np.isfinite(d)
    if min_level_db is not None:
        good &= rms_db(audio) >= np.asarray(min_level_db, dtype=np.float64)
    return np.where(good, d, np.inf)


# ------------------------------------------------------------------------------ proxy refinement
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
        if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
            raise ValueError(f"steps: expected an integer >= 0, got {steps!r}")
        start = np.asarray(start, dtype=np.float64)
        b = len(start)
        target = np.asarray(target, dtype=np.float32)
        if target.shape != (b, self.channels, self.data.n_samples):
            raise ValueError(f"target: expected audio [{b}, {self.channels}, {self.data.n_samples}], got {target.shape}")
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
    from training.proxy_loss import make_proxy_render

    render_fn = make_proxy_render(data)
    layout = head_layout(synth_of(data).spec, data.frozen)
    opt = optax.inject_hyperparams(optax.adam)(learning_rate=lr)  # lr in the state: no recompile

    def distance(variables, target, key, pitch, velocity):
        z, logits = variables
        prediction = {"continuous": jax.nn.sigmoid(z), "logits": tuple(logits)}
        normalized, probs = relaxed_inputs(layout, prediction)
        audio = render_fn(normalized, probs, key, pitch, velocity)
        d = multi_resolution_stft_loss(audio, target, fft_sizes=fft_sizes).mean(axis=-1)  # [B]
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


# ------------------------------------------------------------------------------ CMA-ES
def encode_search(layout: HeadLayout, normalized: np.ndarray) -> np.ndarray:
    """Presets [B, n_params] -> CMA-ES coordinates [B, n_learned] in [0, 1]: continuous learned
    parameters as they are; a categorical one with ``k`` choices as the centre of its choice's
    bin of width ``1/k`` (every choice gets an equal share of the search interval)."""
    n = np.asarray(normalized, dtype=np.float64)
    out = np.empty((len(n), len(layout.learned)))
    cats = layout.spec.category_of(n)
    kind = _kinds(layout)
    for j, i in enumerate(layout.learned):
        k = kind[i]
        out[:, j] = n[:, i] if k == 0 else (cats[:, i] + 0.5) / k
    return out


def decode_search(layout: HeadLayout, x: np.ndarray) -> np.ndarray:
    """CMA-ES coordinates [B, n_learned] -> snapped presets [B, n_params] (inverse of
    :func:`encode_search`; parameters that are not learned take the base preset's values)."""
    x = np.clip(np.asarray(x, dtype=np.float64), 0.0, 1.0)
    out = np.tile(np.asarray(layout.base_normalized, dtype=np.float64), (len(x), 1))
    kind = _kinds(layout)
    for j, i in enumerate(layout.learned):
        k = kind[i]
        out[:, i] = x[:, j] if k == 0 else np.minimum(np.floor(x[:, j] * k), k - 1) / (k - 1)
    return np.asarray(layout.spec.snap_normalized(out), dtype=np.float64)


def _kinds(layout: HeadLayout) -> dict[int, int]:
    kinds = {i: 0 for i in layout.continuous}
    kinds.update(dict(zip(layout.categorical, layout.n_choices)))
    return kinds


@dataclass
class SearchResult:
    """Outcome of :func:`cma_search` for B targets.

    Attributes:
        best: best presets found [B, n_params] (the start if nothing beat it).
        best_mss: their plugin distance [B].
        renders: plugin renders used per target [B] (the start's render included when it was
            scored here).
        history: per target, ``(renders so far, best distance so far, seconds so far)`` after
            every generation; seconds are the lockstep wall time divided by the number of targets.
        seconds: total wall time.
    """

    best: np.ndarray
    best_mss: np.ndarray
    renders: np.ndarray
    history: list[list[tuple[int, float, float]]]
    seconds: float


def cma_search(render: RenderFn, targets: np.ndarray, start: np.ndarray, layout: HeadLayout, budget: int,
               sample_rate: int, *, start_mss: np.ndarray | None = None, sigma0: float = 0.2,
               popsize: int | None = None, seed: int = 0, min_level_db: np.ndarray | float | None = None,
               log: Callable[[str], None] | None = None) -> SearchResult:
    """CMA-ES through the real plugin from presets ``start`` [B, n_params] towards ``targets``
    [B, C, T], ``budget`` plugin renders per target.

    ``start_mss`` [B] is the start's known plugin distance (else the start is rendered first and
    that render counts against the budget). Candidates are scored with :func:`score_mss`; a
    failed render (or, with ``min_level_db`` [B] or scalar, one quieter than that) scores ``inf``
    and is told to CMA-ES as a large value.
    """
    import cma

    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or budget < 0:
        raise ValueError(f"budget: expected an integer number of renders >= 0, got {budget!r}")
    t0 = time.perf_counter()
    start = np.asarray(start, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.float32)
    b = len(start)
    best = start.copy()
    used = np.zeros(b, dtype=np.int64)
    if start_mss is None:
        if budget == 0:
            raise ValueError("cma_search: budget 0 and no start_mss; nothing to score the start with")
        audio, ok = render(start, np.arange(b))
        best_mss = score_mss(audio, targets, ok, sample_rate, min_level_db)
        used += 1
    else:
        best_mss = np.asarray(start_mss, dtype=np.float64).copy()
    floor = None if min_level_db is None else np.broadcast_to(np.asarray(min_level_db, np.float64), (b,))
    history: list[list[tuple[int, float, float]]] = [[(int(used[k]), float(best_mss[k]), 0.0)] for k in range(b)]
    x0 = encode_search(layout, start)
    opts = {"bounds": [0.0, 1.0], "verbose": -9, "verb_log": 0, "verb_disp": 0, "tolfun": 0.0, "tolx": 0.0,
            "tolfunhist": 0.0, "tolstagnation": 10 ** 9, "tolflatfitness": 10 ** 9}
    if popsize is not None:
        opts["popsize"] = int(popsize)
    strategies = []
    for k in range(b):
        o = dict(opts, seed=int(seed) * 100003 + k + 1)  # cma: seed 0 would mean "random"
        strategies.append(cma.CMAEvolutionStrategy(x0[k].tolist(), float(sigma0), o))
    lam = strategies[0].popsize if strategies else 0
    generation = 0
    while b and np.any(used < budget):
        asked, rows, xs = [], [], []
        for k, es in enumerate(strategies):
            left = budget - used[k]
            if left <= 0:
                asked.append(None)
                continue
            sol = es.ask()
            take = min(lam, int(left))
            asked.append((sol, take))
            xs.extend(sol[:take])
            rows.extend([k] * take)
        rows_a = np.asarray(rows)
        cand = decode_search(layout, np.asarray(xs))
        audio, ok = render(cand, rows_a)
        d = score_mss(audio, targets[rows_a], ok, sample_rate, None if floor is None else floor[rows_a])
        generation += 1
        elapsed = (time.perf_counter() - t0) / b
        pos = 0
        for k, a in enumerate(asked):
            if a is None:
                continue
            sol, take = a
            dk = d[pos:pos + take]
            ck = cand[pos:pos + take]
            pos += take
            used[k] += take
            j = int(np.argmin(dk))
            if dk[j] < best_mss[k]:
                best_mss[k], best[k] = dk[j], ck[j]
            if take == len(sol):
                strategies[k].tell(sol, [float(v) if math.isfinite(v) else 1e9 for v in dk])
            history[k].append((int(used[k]), float(best_mss[k]), elapsed))
        if log is not None and generation % 10 == 0:
            log(f"[search] generation {generation}: {int(used.max())}/{budget} renders, "
                f"best mss {np.mean(best_mss):.4f} (mean over {b} target(s))")
    return SearchResult(best, best_mss, used, history, time.perf_counter() - t0)


def renders_to_reach(history: Sequence[tuple[int, float, float]], level: float) -> tuple[int | None, float | None]:
    """(renders, seconds) after which a search's best distance first reached ``level`` (or
    (None, None) if it never did)."""
    for renders, best, seconds in history:
        if best <= level:
            return renders, seconds
    return None, None
