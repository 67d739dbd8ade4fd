"""Black-box search through the real engine: CMA-ES (the ``cma`` package) over the learned
parameters in [0, 1], every candidate rendered by the real synth and scored by the
multi-resolution STFT distance, at a fixed render budget per target. Several targets run in
lockstep so each batch of renders fills the engine's workers.

The search space is a re-parameterisation of the learned parameters (:func:`encode_search` /
:func:`decode_search`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from training.heads import HeadLayout
from training.search import RenderFn, score_mss


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
