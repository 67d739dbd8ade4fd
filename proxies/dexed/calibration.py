"""Calibration: normalized DX7 voices <-> the Dexed proxy's controls, and :func:`load_proxy`.

The proxy (:mod:`proxies.dexed.proxy`) takes the voice in the engine's own units (the 155 VCED
values, native integers), so the calibration is the spec's linear map and nothing is fitted:

* normalized ``n`` in [0, 1] -> native ``v = min + n (max - min)`` per parameter (ranges of
  :data:`proxies.dexed.spec.DEXED`, VCED order: parameter index = VCED byte);
* **exact mode** (``probs=None``): ``v`` snapped to the integer grid the way
  :func:`proxies.dexed.spec.vced_from_normalized` snaps it (``floor(v + 0.5)``), so the proxy
  plays exactly the voice dexed-py gets;
* **relaxed mode** (``probs`` a dict, possibly empty): ``v`` continuous (the proxy's smooth
  surrogates take it), and for the categorical parameters named in :data:`RELAXED` that
  ``probs`` gives, the probabilities (``[B, K]``) replace the one-hot choice of ``normalized``;
  the proxy mixes them (algorithm: a mixture of routings; LFO wave, LFO key sync and the 12
  keyboard-scaling curves: mixtures of their control values). Categoricals not in
  :data:`RELAXED` (oscillator mode, osc key sync) are held at the choice ``normalized`` rounds
  to.

Public API::

    load_proxy() -> proxies.synth.Proxy
    to_controls(normalized [B, 155], probs=None) -> proxy.DexedControls
    from_controls(controls) -> normalized [B, 155]
    one_hot(normalized [B, 155]) -> {name: [B, K]}
    RELAXED: {parameter name: K}
"""

from __future__ import annotations

import functools
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from proxies.dexed import proxy as px
from proxies.synth import Proxy

__all__ = ["RELAXED", "from_controls", "load_proxy", "one_hot", "to_controls"]


@functools.lru_cache(maxsize=1)
def _ranges() -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
    """Names, minimum and maximum of the 155 parameters, from the spec when it imports (checked
    against the proxy's own VCED table), else the proxy's table."""
    try:
        from proxies.dexed.spec import DEXED  # noqa: PLC0415
    except ImportError:  # the spec is optional for the proxy itself
        return px.VCED_NAMES, px.VCED_MIN.astype(np.float32), px.VCED_MAX.astype(np.float32)
    names = tuple(DEXED.names)
    lo, hi = np.asarray(DEXED.minimum, np.float32), np.asarray(DEXED.maximum, np.float32)
    if names != px.VCED_NAMES or not np.array_equal(lo, px.VCED_MIN) or not np.array_equal(hi, px.VCED_MAX):
        raise AssertionError("proxies.dexed.spec.DEXED and proxies.dexed.proxy's VCED table disagree "
                             "(names or ranges); they must both follow shared/dexed/README.md section 3")
    return names, lo, hi


def _names() -> tuple[str, ...]:
    return _ranges()[0]


#: Categorical parameters the relaxed mode mixes: name -> number of choices.
RELAXED: dict[str, int] = {px.VCED_NAMES[i]: k for i, k in sorted(px.CATEGORICAL.items())}

# internal probability keys of proxy.DexedControls
_GLOBAL_KEYS = {px.ALG: "alg", px.LWAVE: "wave", px.LSYNC: "sync"}


def _check_normalized(normalized):
    n = jnp.asarray(normalized, jnp.float32)
    if n.ndim != 2 or n.shape[-1] != px.N_VCED:
        raise ValueError(f"normalized: expected shape [B, {px.N_VCED}] (155 VCED values per voice), got "
                         f"{tuple(n.shape)}")
    return n


def _native(n):
    _, lo, hi = _ranges()
    return jnp.asarray(lo) + n * jnp.asarray(hi - lo)


def _check_probs(probs: Mapping, batch: int) -> None:
    for name, p in probs.items():
        if name not in RELAXED:
            raise ValueError(f"probs: {name!r} is not a parameter the Dexed proxy relaxes; expected some of "
                             f"{sorted(RELAXED)} (the oscillator mode and osc key sync are held hard)")
        if tuple(jnp.shape(p)) != (batch, RELAXED[name]):
            raise ValueError(f"probs[{name!r}]: expected shape ({batch}, {RELAXED[name]}), got {tuple(jnp.shape(p))}")


def to_controls(normalized, probs: Mapping | None = None) -> px.DexedControls:
    """Normalized voices ``[B, 155]`` -> :class:`proxies.dexed.proxy.DexedControls`.

    ``probs=None``: exact mode (values on the integer grid). A dict (possibly empty): relaxed
    mode, continuous values, probabilities ``{name: [B, K]}`` for any of :data:`RELAXED` (the
    others one-hot from ``normalized``). Traceable (jit / grad).
    """
    n = _check_normalized(normalized)
    v = _native(n)
    if probs is None:
        return px.DexedControls(jnp.floor(v + 0.5), None)
    _check_probs(probs, n.shape[0])
    # float32 n (max - min) misses the integer a grid value stands for by an ulp: snap values within
    # 1e-3 of an integer onto it (identity gradient), so that on-grid voices render as exact mode
    k = jnp.floor(v + 0.5)
    v = v + jax.lax.stop_gradient(jnp.where(jnp.abs(v - k) < 1e-3, k - v, 0.0))
    hard = px.hard_probs(k)
    names = _names()
    out = dict(hard)
    for index, key in _GLOBAL_KEYS.items():
        if names[index] in probs:
            out[key] = jnp.asarray(probs[names[index]], jnp.float32)
    for side, off in (("lc", px.LC), ("rc", px.RC)):
        cols = [jnp.asarray(probs[names[21 * k + off]], jnp.float32) if names[21 * k + off] in probs
                else hard[side][:, k] for k in range(6)]
        out[side] = jnp.stack(cols, 1)
    return px.DexedControls(v, out)


def one_hot(normalized) -> dict:
    """Exact-mode probabilities ``{name: [B, K]}`` of every parameter in :data:`RELAXED`."""
    n = _check_normalized(normalized)
    v = jnp.floor(_native(n) + 0.5).astype(jnp.int32)
    names = _names()
    return {names[i]: jax.nn.one_hot(v[:, i], k, dtype=jnp.float32) for i, k in sorted(px.CATEGORICAL.items())}


def from_controls(controls: px.DexedControls):
    """Inverse of :func:`to_controls`: controls -> normalized ``[B, 155]`` in [0, 1]
    (categoricals with probabilities at their most probable choice)."""
    v = jnp.asarray(controls.values, jnp.float32)
    if controls.probs is not None:
        p = controls.probs
        for index, key in _GLOBAL_KEYS.items():
            v = v.at[:, index].set(jnp.argmax(p[key], -1).astype(jnp.float32))
        for side, off in (("lc", px.LC), ("rc", px.RC)):
            v = v.at[:, 21 * np.arange(6) + off].set(jnp.argmax(p[side], -1).astype(jnp.float32))
    _, lo, hi = _ranges()
    return jnp.clip((v - jnp.asarray(lo)) / jnp.asarray(hi - lo), 0.0, 1.0)


def load_proxy() -> Proxy:
    """The Dexed proxy behind the synth seam (:class:`proxies.synth.Proxy`)."""
    _ranges()  # fail early if the spec and the proxy disagree
    return Proxy(to_controls=to_controls, render=px.render, relaxed=dict(RELAXED), one_hot=one_hot,
                 from_controls=from_controls)
