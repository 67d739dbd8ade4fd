"""Calibration: amsynth's normalized plugin values <-> the proxy's physical parameters.

Both directions are batched and differentiable (JAX); the spec's exact laws come from
:data:`proxies.amsynth.spec.AMSYNTH` (README §2.2) plus the plugin's own float expressions for
the derived quantities (``UpdateParameter`` in VoiceBoard.cpp, revmodel.cpp, Distortion.cpp).

A fitted **residual** sits in front of the laws: a per-parameter monotone piecewise-linear map
in normalized space (``calibration_residual.json``, fitted by ``python -m proxies.calibrate
amsynth``; identity when absent). ``to_proxy`` applies it, ``from_proxy`` inverts it.

Precision: a concrete NumPy ``normalized`` takes the plugin's path (float64 laws rounded to
float32, bit-identical control values); a JAX array (traced or not) takes the float32
differentiable laws, whose results differ from the plugin's by an ulp or so (sub-cent).

Public API (stable; the training code depends on it)::

    to_proxy(normalized [B, 41], probs=None) -> ProxyParams
    from_proxy(params) -> normalized [B, 41]
    render_normalized(normalized, config=ProxyConfig(), probs=None, key=None) -> [B, 2, T]
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from proxies.amsynth.proxy import CATEGORICAL_SIZES, ProxyConfig, ProxyParams, render
from proxies.amsynth.spec import AMSYNTH
from proxies.files import atomic_write_json

__all__ = [
    "ProxyConfig",
    "ProxyParams",
    "CATEGORICAL_SIZES",
    "ORDERED_STEPPED",
    "Residual",
    "load_residual",
    "to_proxy",
    "from_proxy",
    "render_normalized",
    "render_controls",
    "proxy_config",
    "one_hot_probs",
    "RELAXED_SIZES",
]

RESIDUAL_PATH = Path(__file__).with_name("calibration_residual.json")

#: Stepped parameters that are ordered (relaxed mode: continuous values, expected value of
#: their probabilities when given).
ORDERED_STEPPED = {"osc2_range": (-3, 4), "osc2_pitch": (-12, 12)}

#: Every stepped parameter whose probabilities relaxed mode takes, with its number of choices.
RELAXED_SIZES = {**CATEGORICAL_SIZES, **{k: hi - lo + 1 for k, (lo, hi) in ORDERED_STEPPED.items()}}

_IDX = {name: AMSYNTH.index_of(name) for name in AMSYNTH.names}
_CONTINUOUS = tuple(p.name for p in AMSYNTH if not p.is_stepped)


# ---------------------------------------------------------------------------------------
# Residual: per-parameter monotone piecewise-linear maps in normalized space
# ---------------------------------------------------------------------------------------


class Residual:
    """``n' = interp(n, x, y[name])`` per continuous parameter (identity when absent).

    ``x`` is a shared uniform knot grid on [0, 1]; every ``y`` is strictly increasing, so the
    map is invertible (:meth:`inverse`). Parameters absent from ``maps`` are untouched. The
    knot values may be JAX arrays (the fit differentiates through them).
    """

    def __init__(self, knots: int = 9, maps: Mapping[str, object] | None = None, check: bool = True):
        self.x = np.linspace(0.0, 1.0, int(knots))
        self.maps = {}
        for name, y in (maps or {}).items():
            if name not in _CONTINUOUS:
                raise ValueError(f"residual {name!r}: only continuous parameters have a residual; "
                                 f"expected one of {', '.join(_CONTINUOUS)}")
            if check:
                y = np.asarray(y, np.float64)
                if y.shape != self.x.shape:
                    raise ValueError(f"residual {name}: expected {len(self.x)} knot values, got shape {y.shape}")
                if np.any(np.diff(y) <= 0) or not np.all(np.isfinite(y)):
                    raise ValueError(f"residual {name}: knot values must be finite and strictly increasing, got {y}")
            self.maps[name] = y

    @property
    def is_identity(self) -> bool:
        return all(np.allclose(np.asarray(y), self.x, atol=1e-9) for y in self.maps.values())

    def _apply(self, normalized, inverse: bool, xp):
        if not self.maps:
            return normalized
        cols = [normalized[..., i] for i in range(AMSYNTH.n_params)]
        x = xp.asarray(self.x, normalized.dtype)
        for name, y in self.maps.items():
            i = _IDX[name]
            y = xp.asarray(y, normalized.dtype)
            xs, ys = (y, x) if inverse else (x, y)
            cols[i] = xp.interp(cols[i], xs, ys)
        return xp.stack(cols, axis=-1)

    def forward(self, normalized, xp=jnp):
        """Plugin normalized values -> the values the proxy's laws receive."""
        return self._apply(normalized, False, xp)

    def inverse(self, normalized, xp=jnp):
        return self._apply(normalized, True, xp)

    def to_json(self) -> dict:
        return {"knots": len(self.x), "maps": {k: [float(v) for v in np.asarray(y)] for k, y in self.maps.items()}}

    @classmethod
    def from_json(cls, data: Mapping) -> "Residual":
        unknown = set(data) - {"knots", "maps", "meta"}
        if unknown:
            raise ValueError(f"calibration residual: unknown keys {sorted(unknown)}; expected knots, maps, meta")
        return cls(int(data["knots"]), {k: np.asarray(v) for k, v in data.get("maps", {}).items()})


@functools.lru_cache(maxsize=1)
def _default_residual() -> Residual:
    return load_residual(RESIDUAL_PATH)


def load_residual(path: str | os.PathLike | None = RESIDUAL_PATH) -> Residual:
    """The residual stored at ``path`` (identity if the file does not exist)."""
    if path is None or not Path(path).exists():
        return Residual()
    with open(path) as f:
        return Residual.from_json(json.load(f))


# ---------------------------------------------------------------------------------------
# normalized -> proxy
# ---------------------------------------------------------------------------------------


def one_hot_probs(normalized, xp=jnp) -> dict:
    """Exact-mode probabilities: one-hot of the plugin's snapped choice, ``{name: [B, K]}``."""
    cat = AMSYNTH.category_of(normalized, xp)
    return {name: xp.asarray(cat[..., _IDX[name]][..., None] == xp.arange(k), dtype=xp.float32)
            for name, k in CATEGORICAL_SIZES.items()}


def _check_probs(probs: Mapping, batch: tuple) -> None:
    allowed = set(CATEGORICAL_SIZES) | set(ORDERED_STEPPED)
    for name, p in probs.items():
        if name not in allowed:
            raise ValueError(f"probs: unknown key {name!r}; expected some of {sorted(allowed)}")
        k = CATEGORICAL_SIZES.get(name) or (ORDERED_STEPPED[name][1] - ORDERED_STEPPED[name][0] + 1)
        if tuple(p.shape) != batch + (k,):
            raise ValueError(f"probs[{name!r}]: expected shape {batch + (k,)}, got {tuple(p.shape)}")


def to_proxy(normalized, probs: Mapping | None = None, residual: Residual | None = None) -> ProxyParams:
    """Plugin normalized values ``[B, 41]`` -> :class:`ProxyParams` (physical units).

    Args:
      normalized: ``[B, 41]`` in [0, 1], plugin parameter order.
      probs: None = exact mode (categoricals one-hot from the snapped values; osc2 range
        and semitones snapped). Otherwise relaxed mode: ``{name: [B, K]}`` probabilities
        for any of :data:`CATEGORICAL_SIZES` (missing ones are one-hot from
        ``normalized``) and optionally ``osc2_range`` ``[B, 8]`` / ``osc2_pitch``
        ``[B, 25]`` (their expected value is used); osc2 range and semitones without
        probabilities are continuous (unsnapped) in relaxed mode.
      residual: calibration residual (default: the shipped one).
    Returns:
      :class:`ProxyParams` with batch ``B``.
    """
    use_np = isinstance(normalized, np.ndarray) and probs is None
    xp = np if use_np else jnp
    n = xp.asarray(normalized, dtype=xp.float32)
    AMSYNTH._check_last_axis(n)
    if n.ndim != 2:
        raise ValueError(f"normalized: expected shape [B, {AMSYNTH.n_params}], got {n.shape}; "
                         "add a leading batch axis")
    res = _default_residual() if residual is None else residual
    n = res.forward(n, xp).astype(xp.float32)
    v = AMSYNTH.normalized_to_internal(n, xp)
    cv = AMSYNTH.internal_to_control(v, xp)
    f = lambda x: xp.asarray(x, xp.float32)  # noqa: E731
    c = lambda name: cv[:, _IDX[name]]  # noqa: E731
    one = f(1.0)
    two = f(2.0)

    if probs is None:
        prob = one_hot_probs(n, xp)
        octave = v[:, _IDX["osc2_range"]]
        semis = v[:, _IDX["osc2_pitch"]]
    else:
        _check_probs(probs, (n.shape[0],))
        prob = dict(one_hot_probs(n, xp))
        prob.update({k: jnp.asarray(p, jnp.float32) for k, p in probs.items() if k in CATEGORICAL_SIZES})
        vc = AMSYNTH.normalized_to_internal_continuous(n, xp)
        ordered = {}
        for name, (lo, hi) in ORDERED_STEPPED.items():
            if name in probs:
                ordered[name] = jnp.asarray(probs[name], jnp.float32) @ jnp.arange(lo, hi + 1, dtype=jnp.float32)
            else:
                ordered[name] = vc[:, _IDX[name]]
        octave, semis = ordered["osc2_range"], ordered["osc2_pitch"]

    res_cv = c("filter_resonance")
    r = xp.maximum(f(0.001), two * (one - res_cv))
    params = ProxyParams(
        amp_attack_s=c("amp_attack"),
        amp_decay_s=c("amp_decay"),
        amp_sustain=c("amp_sustain"),
        amp_release_s=c("amp_release"),
        filter_attack_s=c("filter_attack"),
        filter_decay_s=c("filter_decay"),
        filter_sustain=c("filter_sustain"),
        filter_release_s=c("filter_release"),
        filter_q=one / r,
        filter_env_amount=c("filter_env_amount"),
        filter_cutoff_mult=c("filter_cutoff"),
        osc2_detune_ratio=c("osc2_detune"),
        master_gain=c("master_vol"),
        lfo_hz=c("lfo_freq"),
        osc2_octave=f(octave),
        osc_mix=c("osc_mix"),
        lfo_pitch_depth=c("freq_mod_amount") / two + f(0.5),
        lfo_cutoff_depth=(c("filter_mod_amount") + one) / two,
        lfo_amp_depth=(c("amp_mod_amount") + one) / two,
        ring_mod=c("osc_mix_mode"),
        osc1_shape=c("osc1_pulsewidth"),
        osc2_shape=c("osc2_pulsewidth"),
        reverb_room=c("reverb_roomsize") * f(0.28) + f(0.7),
        reverb_damp=c("reverb_damp") * f(0.4),
        reverb_wet=c("reverb_wet"),
        reverb_width=c("reverb_width"),
        distortion_exponent=one - c("distortion_crunch"),
        osc2_semitones=f(semis),
        filter_key_track=c("filter_kbd_track"),
        filter_vel_sens=c("filter_vel_sens"),
        amp_vel_sens=c("amp_vel_sens"),
        portamento_s=c("portamento_time"),
        keyboard_mode=v[:, _IDX["keyboard_mode"]],
        portamento_mode=v[:, _IDX["portamento_mode"]],
        probs=prob,
    )
    if use_np:
        params = jax.tree_util.tree_map(jnp.asarray, params)
    return params


# ---------------------------------------------------------------------------------------
# proxy -> normalized
# ---------------------------------------------------------------------------------------


def _cbrt(x):
    return jnp.cbrt(jnp.maximum(x, 0.0))


def _time_to_n(t_s):
    return _cbrt(t_s - 0.0005) / 2.5


def from_proxy(params: ProxyParams, residual: Residual | None = None) -> jax.Array:
    """:class:`ProxyParams` -> plugin normalized values ``[B, 41]`` (inverse of :func:`to_proxy`).

    Categorical parameters take the most probable choice (its grid value); osc2 range and
    semitones are rounded to the nearest step (the plugin snaps them anyway). Values are
    clipped to [0, 1].
    """
    p = params
    B = p.amp_sustain.shape[0]
    cols = [None] * AMSYNTH.n_params

    def put(name, value):
        cols[_IDX[name]] = jnp.asarray(value, jnp.float32)

    for env in ("amp", "filter"):
        put(f"{env}_attack", _time_to_n(getattr(p, f"{env}_attack_s")))
        put(f"{env}_decay", _time_to_n(getattr(p, f"{env}_decay_s")))
        put(f"{env}_sustain", getattr(p, f"{env}_sustain"))
        put(f"{env}_release", _time_to_n(getattr(p, f"{env}_release_s")))
    put("filter_resonance", (1.0 - 1.0 / (2.0 * p.filter_q)) / 0.97)
    put("filter_env_amount", (p.filter_env_amount + 16.0) / 32.0)
    put("filter_cutoff", (jnp.log(p.filter_cutoff_mult) / jnp.log(16.0) + 0.5) / 2.0)
    put("osc2_detune", (jnp.log(p.osc2_detune_ratio) / jnp.log(1.25) + 1.0) / 2.0)
    put("master_vol", jnp.sqrt(jnp.maximum(p.master_gain, 0.0)))
    put("lfo_freq", jnp.sqrt(jnp.maximum(p.lfo_hz, 0.0)) / 7.5)
    put("osc2_range", (jnp.round(p.osc2_octave) + 3.0) / 7.0)
    put("osc_mix", (p.osc_mix + 1.0) / 2.0)
    put("freq_mod_amount", _cbrt(2.0 * p.lfo_pitch_depth) / AMSYNTH["freq_mod_amount"].maximum)
    put("filter_mod_amount", p.lfo_cutoff_depth)
    put("amp_mod_amount", p.lfo_amp_depth)
    put("osc_mix_mode", p.ring_mod)
    put("osc1_pulsewidth", p.osc1_shape)
    put("osc2_pulsewidth", p.osc2_shape)
    put("reverb_roomsize", (p.reverb_room - 0.7) / 0.28)
    put("reverb_damp", p.reverb_damp / 0.4)
    put("reverb_wet", p.reverb_wet)
    put("reverb_width", p.reverb_width)
    put("distortion_crunch", (1.0 - p.distortion_exponent) / 0.9)
    put("portamento_time", p.portamento_s)
    put("keyboard_mode", p.keyboard_mode / 2.0)
    put("osc2_pitch", (jnp.round(p.osc2_semitones) + 12.0) / 24.0)
    put("filter_kbd_track", p.filter_key_track)
    put("filter_vel_sens", p.filter_vel_sens)
    put("amp_vel_sens", p.amp_vel_sens)
    put("portamento_mode", p.portamento_mode)
    for name, k in CATEGORICAL_SIZES.items():
        put(name, jnp.argmax(p.probs[name], axis=-1).astype(jnp.float32) / (k - 1))
    missing = [AMSYNTH.names[i] for i, col in enumerate(cols) if col is None]
    assert not missing, missing
    n = jnp.clip(jnp.stack([jnp.broadcast_to(col, (B,)) for col in cols], axis=-1), 0.0, 1.0)
    res = _default_residual() if residual is None else residual
    return jnp.clip(res.inverse(n, jnp), 0.0, 1.0)


# ---------------------------------------------------------------------------------------
# Render
# ---------------------------------------------------------------------------------------

_render_jit = jax.jit(render, static_argnums=1)


def render_normalized(normalized, config: ProxyConfig = ProxyConfig(), probs: Mapping | None = None,
                      key=None, residual: Residual | None = None, pitch=None, velocity=None) -> jax.Array:
    """Calibration + proxy render: ``[B, 41]`` normalized -> stereo ``[B, 2, T]``.

    ``pitch`` / ``velocity``: int ``[B]`` per row (traced; None: ``config.note`` / ``velocity``).
    Jit-friendly: call it inside ``jax.jit`` with ``config`` static (a hashable
    :class:`ProxyConfig`); called eagerly, the render itself runs jitted.
    """
    params = to_proxy(normalized, probs, residual)
    if pitch is None and velocity is None and not isinstance(params.amp_sustain, jax.core.Tracer):
        return _render_jit(params, config, key)
    B = params.amp_sustain.shape[0]
    pitch = jnp.full((B,), config.note, jnp.int32) if pitch is None else pitch
    velocity = jnp.full((B,), config.velocity, jnp.int32) if velocity is None else velocity
    if isinstance(params.amp_sustain, jax.core.Tracer):
        return render(params, config, key, pitch, velocity)
    return _render_jit(params, config, key, pitch, velocity)


def proxy_config(render_config) -> ProxyConfig:
    """The amsynth :class:`ProxyConfig` of the seam's static :class:`proxies.synth.ProxyRender`."""
    return ProxyConfig(sample_rate=int(render_config.sample_rate), duration_s=float(render_config.duration_s),
                       hold_s=float(render_config.hold_s))


def render_controls(params: ProxyParams, pitch, velocity, render_config, key=None) -> jax.Array:
    """The seam's pure render (``proxies.synth.Proxy.render``): controls + traced pitch and velocity
    ``[B]`` -> stereo ``[B, 2, T]``, ``render_config`` a static :class:`proxies.synth.ProxyRender`."""
    return render(params, proxy_config(render_config), key, pitch, velocity)


# ---------------------------------------------------------------------------------------
# Fitting the residual
# ---------------------------------------------------------------------------------------

#: Parameters that get a fitted residual: continuous, sampled by the prior, and audible in a
#: one-note render (portamento is fixed in the prior).
FIT_PARAMS = tuple(p.name for p in AMSYNTH if not p.is_stepped and p.prior != "fixed")


def _residual_from_theta(theta: Mapping, knots: int) -> Residual:
    """Monotone knot values from free parameters: ``y0 = 0.1 tanh(a)``, increments
    ``exp(t_k) / (knots - 1)`` (theta = 0 is the identity)."""
    maps = {}
    for name, (a, t) in theta.items():
        inc = jnp.exp(t) / (knots - 1)
        y = 0.1 * jnp.tanh(a) + jnp.concatenate([jnp.zeros((1,)), jnp.cumsum(inc)])
        maps[name] = y
    return Residual(knots, maps, check=False)


def fit_residual(normalized: np.ndarray, target_audio: np.ndarray, config: ProxyConfig, *, knots: int = 9,
                 steps: int = 40, learning_rate: float = 1e-4, batch_size: int = 8, l2: float = 1e-3,
                 seed: int = 0, params: tuple[str, ...] = FIT_PARAMS, log=print) -> tuple[Residual, dict]:
    """Fit the per-parameter monotone residual by minimising the proxy-vs-plugin distance.

    Loss: mean multi-resolution STFT distance (``diffsynth.losses``) between
    ``render_normalized(normalized)`` (with the residual) and the plugin renders, plus
    ``l2 * |theta|^2`` towards the identity. Adam on mini-batches from the identity; the
    full-set loss is checked every 10 steps and the best residual seen is returned.

    Args:
      normalized: ``[N, 41]`` presets (no noise: their renders are not reproducible).
      target_audio: ``[N, 2, T]`` plugin renders of them with ``config``.
      config: the proxy config matching the renders.
    Returns:
      ``(residual, info)``: the fitted residual and ``{"loss_identity", "loss_fitted",
      "steps", ...}`` (losses over all N presets).
    """
    import optax

    from diffsynth.losses import multi_resolution_stft_loss

    n_all = jnp.asarray(normalized, jnp.float32)
    y_all = jnp.asarray(target_audio, jnp.float32)
    theta = {name: (jnp.zeros(()), jnp.zeros((knots - 1,))) for name in params}

    def loss_fn(th, n, y):
        res = _residual_from_theta(th, knots)
        audio = render(to_proxy(n, residual=res), config)
        dist = jnp.mean(multi_resolution_stft_loss(audio, y))
        reg = sum(jnp.sum(a ** 2) + jnp.sum(t ** 2) for a, t in th.values())
        return dist + l2 * reg, dist

    opt = optax.adam(learning_rate)
    state = opt.init(theta)

    @jax.jit
    def step(th, st, n, y):
        (_, dist), g = jax.value_and_grad(loss_fn, has_aux=True)(th, n, y)
        upd, st = opt.update(g, st, th)
        return optax.apply_updates(th, upd), st, dist

    @jax.jit
    def evaluate(th, n, y):
        return loss_fn(th, n, y)[1]

    def full_loss(th):
        return float(np.mean([float(evaluate(th, n_all[i:i + batch_size], y_all[i:i + batch_size]))
                              for i in range(0, len(n_all), batch_size)]))

    rng = np.random.default_rng(seed)
    loss0 = full_loss(theta)
    log(f"identity residual: loss {loss0:.5f}")
    best, best_loss = theta, loss0
    for k in range(steps):
        idx = rng.choice(len(n_all), size=min(batch_size, len(n_all)), replace=False)
        theta, state, dist = step(theta, state, n_all[idx], y_all[idx])
        if (k + 1) % 10 == 0 or k == steps - 1:
            current = full_loss(theta)
            log(f"step {k + 1:4d}: batch loss {float(dist):.5f}, full loss {current:.5f}")
            if current < best_loss:
                best, best_loss = theta, current
    loss1 = best_loss
    log(f"fitted residual: loss {loss1:.5f} (identity {loss0:.5f})")
    fitted = _residual_from_theta(best, knots)
    maps = {k: np.asarray(v, np.float64) for k, v in fitted.maps.items()}
    info = {"loss_identity": loss0, "loss_fitted": loss1, "steps": steps, "n_presets": int(len(n_all)),
            "knots": knots, "learning_rate": learning_rate, "l2": l2,
            "max_knot_shift": float(max(np.max(np.abs(y - fitted.x)) for y in maps.values()))}
    # Keep the fit only where it helps; an identity map is stored as no map at all.
    if loss1 >= loss0:
        return Residual(knots), {**info, "accepted": False}
    maps = {k: y for k, y in maps.items() if np.max(np.abs(y - fitted.x)) > 1e-6}
    return Residual(knots, maps), {**info, "accepted": True}


def save_residual(residual: Residual, path: str | os.PathLike = RESIDUAL_PATH, meta: Mapping | None = None) -> None:
    """Write the residual as JSON (atomically)."""
    data = residual.to_json()
    if meta:
        data["meta"] = dict(meta)
    path = Path(path)
    atomic_write_json(path, data, sort_keys=True)
    _default_residual.cache_clear()
