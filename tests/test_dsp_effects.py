"""diffsynth.effects against per-sample NumPy transliterations of amsynth's master section (README §7)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest


from diffsynth.effects import freeverb, freeverb_delay_lengths, freeverb_mix_gains, peak_limiter, power_distortion
from gradcheck import spectral_l2

SR = 44100
f32 = np.float32
FLT_MIN = np.finfo(np.float32).tiny


# ---------------------------------------------------------------------------------------
# NumPy references
# ---------------------------------------------------------------------------------------


def freeverb_ref(left, right, sr, room_n, damp_n, wet, dry, width, rectify=True, inplace=True, z0=None):
    """revmodel::processmix (amsynth's vendored Freeverb), float32, one sample at a time."""
    rate = int(sr)

    def tuning(n):
        return int(f32(n * rate) / f32(44100.0))

    combs, aps = [1116, 1188, 1277, 1356, 1422, 1491, 1557, 1617], [556, 441, 341, 225]
    room = f32(f32(room_n) * f32(0.28) + f32(0.7))
    damp1 = f32(f32(damp_n) * f32(0.4))
    damp2 = f32(f32(1) - damp1)
    w1 = f32(f32(wet) * f32(f32(width) / f32(2) + f32(0.5)))
    w2 = f32(f32(wet) * f32(f32(f32(1) - f32(width)) / f32(2)))
    d = f32(dry)

    def und(x):
        return f32(0) if (rectify and x < FLT_MIN) else x

    class Comb:
        def __init__(self, n):
            self.buf, self.i, self.store = np.zeros(n, np.float32), 0, f32(0)

        def __call__(self, x):
            o = und(self.buf[self.i])
            self.store = und(f32(f32(o * damp2) + f32(self.store * damp1)))
            self.buf[self.i] = f32(x + f32(self.store * room))
            self.i = (self.i + 1) % len(self.buf)
            return o

    class Allpass:
        def __init__(self, n):
            self.buf, self.i = np.zeros(n, np.float32), 0

        def __call__(self, x):
            b = und(self.buf[self.i])
            out = f32(-x + b)
            self.buf[self.i] = f32(x + f32(b * f32(0.5)))
            self.i = (self.i + 1) % len(self.buf)
            return out

    cl = [Comb(tuning(n)) for n in combs]
    cr = [Comb(tuning(n + 23)) for n in combs]
    al = [Allpass(tuning(n)) for n in aps]
    ar = [Allpass(tuning(n + 23)) for n in aps]
    n = len(left)
    out_l, out_r = np.zeros(n, np.float32), np.zeros(n, np.float32)
    dz, w1z, w2z = (None, None, None) if z0 is None else map(f32, z0)
    for i in range(n):
        lv, rv = f32(left[i]), f32(right[i])
        inp = f32(f32(lv + rv) * f32(0.015))
        ol, orr = f32(0), f32(0)
        for c in cl:
            ol = f32(ol + c(inp))
        for c in cr:
            orr = f32(orr + c(inp))
        for a in al:
            ol = a(ol)
        for a in ar:
            orr = a(orr)
        if z0 is None:
            dd, g1, g2 = d, w1, w2
        else:
            dz = f32(dz + f32(f32(d - dz) * f32(0.005)))
            w1z = f32(w1z + f32(f32(w1 - w1z) * f32(0.005)))
            w2z = f32(w2z + f32(f32(w2 - w2z) * f32(0.005)))
            dd, g1, g2 = dz, w1z, w2z
        ml = f32(f32(f32(ol * g1) + f32(orr * g2)) + f32(lv * dd))
        mr = f32(f32(f32(orr * g1) + f32(ol * g2)) + f32(rv * dd))
        out_l[i], out_r[i] = (f32(lv + ml), f32(rv + mr)) if inplace else (ml, mr)
    return out_l, out_r


def limiter_ref(left, right, sr, thr=0.9, at=1e-4, rt=0.5):
    """SoftLimiter::Process, float64 state."""
    att = 1 - np.exp(-2.2 / (at * float(sr)))
    rel = 1 - np.exp(-2.2 / (rt * float(sr)))
    th = float(f32(np.log(thr)))
    p = 0.0
    out_l, out_r = np.empty_like(left), np.empty_like(right)
    for i in range(len(left)):
        x = float(f32(abs(left[i])) + f32(abs(right[i])))
        p = (1 - rel) * p + att * (x - p) if x > p else (1 - rel) * p
        if p > 0:
            g = np.log(p) - th
            g = np.exp(0.0 if g < 0 else -g)
        else:
            g = 1.0
        out_l[i], out_r[i] = f32(float(left[i]) * g), f32(float(right[i]) * g)
    return out_l, out_r


def _test_signal(n, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n) / SR
    x = 0.3 * np.sin(2 * np.pi * 220 * t) * np.exp(-t * 5)
    x[:50] += rng.standard_normal(50) * 0.5
    return x.astype(np.float32)


# ---------------------------------------------------------------------------------------
# Distortion
# ---------------------------------------------------------------------------------------


def test_power_distortion_matches_reference():
    x = np.concatenate([[0.0, -0.0, 1e-30, -1e-30, 1.0, -1.0], np.random.default_rng(0).uniform(-1.5, 1.5, 1000)])
    x = x.astype(np.float32)
    for c in (1.0, 0.55, 0.1, 0.01, 0.0, -0.3):
        y = np.asarray(jax.jit(power_distortion)(x, c))
        ce = max(c, 0.01)
        ref = np.where(x < 0, -1.0, 1.0) * np.abs(x.astype(np.float64)) ** ce
        np.testing.assert_allclose(y, ref, rtol=2e-6, atol=0)
    np.testing.assert_array_equal(np.asarray(jax.jit(power_distortion)(x, 1.0)), x)  # identity at c = 1


@pytest.mark.parametrize("c", [1.0, 0.55, 0.1, 0.01])
def test_power_distortion_gradients_finite(c):
    x = jnp.array([0.0, -0.0, 1e-30, -1e-20, 0.3, -0.7])
    gx, gc = jax.jit(jax.grad(lambda x, c: jnp.sum(power_distortion(x, c) ** 2 + power_distortion(x, c)),
                              argnums=(0, 1)))(x, jnp.float32(c))
    assert np.isfinite(np.asarray(gx)).all() and np.isfinite(float(gc))
    gx0 = jax.grad(lambda x: power_distortion(x, c))(0.0)
    assert float(gx0) == 1.0  # documented convention at x = 0


# ---------------------------------------------------------------------------------------
# Reverb
# ---------------------------------------------------------------------------------------


def test_freeverb_delay_lengths():
    d48 = freeverb_delay_lengths(48000)
    assert d48["comb_left"][0] == 1214 and d48["comb_right"][0] == int(f32(1139 * 48000) / f32(44100))
    d44 = freeverb_delay_lengths(44100)
    # n*rate exceeds 2^24 and is rounded to float32 first: 1557 and 1617 lose a sample.
    assert d44["comb_left"] == (1116, 1188, 1277, 1356, 1422, 1491, 1556, 1616)
    assert d44["allpass_right"] == (579, 464, 364, 248)


_N_REV = 4500
_REV_IN = _test_signal(_N_REV)


@pytest.mark.parametrize("rectify,inplace", [(True, True), (False, True), (True, False)])
def test_freeverb_matches_reference(rectify, inplace):
    ref_l, ref_r = freeverb_ref(_REV_IN, _REV_IN, SR, 0.9, 0.5, 0.6, 0.4, 0.7, rectify=rectify, inplace=inplace)
    y_l, y_r = freeverb(_REV_IN, _REV_IN, SR, 0.9, 0.5, 0.6, 0.4, 0.7, rectify=rectify, inplace_mix=inplace)
    scale = np.abs(ref_l).max()
    for y, ref in ((y_l, ref_l), (y_r, ref_r)):
        assert np.abs(np.asarray(y) - ref).max() <= 1e-5 * scale
    wet_ref = freeverb_ref(_REV_IN, _REV_IN, SR, 0.9, 0.5, 1.0, 0.0, 1.0, rectify=rectify, inplace=False)[0]
    tail = wet_ref[2500:]
    if rectify:  # amsynth's quirk: a rectified wet signal with DC
        assert tail.mean() > 0.1 * np.abs(tail).max()
    else:
        assert abs(tail.mean()) < 0.1 * np.abs(tail).max()


def test_freeverb_48k_with_gain_smoothing():
    n = 3000
    x = _test_signal(n, 1)
    ref = freeverb_ref(x, 0.5 * x, 48000, 0.3, 0.8, 0.25, 0.75, 0.4, z0=(0.0, 0.1, 0.2))[0]
    y = np.asarray(freeverb(x, 0.5 * x, 48000, 0.3, 0.8, 0.25, 0.75, 0.4, gain_smoother_initial=(0.0, 0.1, 0.2))[0])
    assert np.abs(y - ref).max() <= 1e-5 * np.abs(ref).max()


def test_freeverb_batched_per_sample_gains():
    x = np.stack([_test_signal(2000, s) for s in range(6)]).reshape(3, 2, 2000)
    wet = np.array([[0.0, 0.5], [1.0, 0.2], [0.3, 0.3]], np.float32)
    per_sample = np.broadcast_to(wet[..., None], (3, 2, 2000))
    y_l, y_r = freeverb(x, x, SR, 0.5, 0.5, per_sample, 1.0 - per_sample, 1.0)
    assert y_l.shape == y_r.shape == (3, 2, 2000)
    np.testing.assert_allclose(np.asarray(y_l[0, 0]), 2 * x[0, 0], rtol=1e-6)  # wet 0: the dry path doubled
    ref = freeverb_ref(x[1, 0], x[1, 0], SR, 0.5, 0.5, 1.0, 0.0, 1.0)[0]
    assert np.abs(np.asarray(y_l[1, 0]) - ref).max() <= 1e-5 * np.abs(ref).max()
    w1, w2, d = freeverb_mix_gains(0.5, 0.5, 0.0)
    assert float(w1) == 0.25 and float(w2) == 0.25 and float(d) == 0.5


# ---------------------------------------------------------------------------------------
# Limiter
# ---------------------------------------------------------------------------------------


def test_peak_limiter_matches_float64_reference():
    n = 6000
    rng = np.random.default_rng(2)
    t = np.arange(n) / SR
    env = np.where(t < 0.03, 1.5, 1.5 * np.exp(-(t - 0.03) * 20))  # loud, then a decay through the threshold
    left = (env * np.sin(2 * np.pi * 330 * t) + 0.05 * rng.standard_normal(n)).astype(np.float32)
    right = (0.7 * left).astype(np.float32)
    ref_l, ref_r = limiter_ref(left, right, SR)
    y_l, y_r = jax.jit(lambda a, b: peak_limiter(a, b, SR))(left, right)
    np.testing.assert_allclose(np.asarray(y_l), ref_l, rtol=3e-7, atol=1e-8)
    np.testing.assert_allclose(np.asarray(y_r), ref_r, rtol=3e-7, atol=1e-8)
    assert (np.abs(left) + np.abs(right)).max() > 2.0  # the limiter is engaged
    assert (np.abs(np.asarray(y_l)) + np.abs(np.asarray(y_r)))[50:].max() < 0.95  # small attack overshoot
    quiet = 0.1 * left
    np.testing.assert_array_equal(np.asarray(peak_limiter(quiet, quiet, SR)[0]), quiet)  # below threshold: untouched
    b = peak_limiter(jnp.stack([left, quiet]), jnp.stack([right, quiet]), SR, attack_s=jnp.array([1e-4, 1e-3]))
    assert b[0].shape == (2, n)
    g = jax.jit(jax.grad(lambda s, rel: jnp.sum(peak_limiter(s * left, s * right, SR, release_s=rel)[0] ** 2),
                         argnums=(0, 1)))(1.0, 0.5)
    assert all(np.isfinite(float(v)) for v in g)


# ---------------------------------------------------------------------------------------
# Gradients vs finite differences
# ---------------------------------------------------------------------------------------


_N_FX = 4096
_FX_IN = jnp.asarray(0.6 * np.sin(2 * np.pi * 220 * np.arange(_N_FX) / SR) * np.exp(-np.arange(_N_FX) / 3000),
                     jnp.float32)


def _chain(p):
    """distortion(c) -> reverb(wet), as amsynth's master section (limiter left out)."""
    y = power_distortion(_FX_IN, p[0])
    return freeverb(y, y, SR, 0.7, 0.3, p[1], 1.0 - p[1], 1.0)[0]


_FX_TARGET = _chain(jnp.array([0.6, 0.4]))


_fx_value_and_grad = jax.jit(jax.value_and_grad(lambda p: spectral_l2(_chain(p), _FX_TARGET)))


def _fx_loss(p):
    return _fx_value_and_grad(p)[0]


def _fx_grad(p):
    return _fx_value_and_grad(p)[1]


def test_effects_gradients_match_finite_differences():
    for point in ([1.0, 0.1], [0.3, 0.7], [0.1, 0.5]):
        p = np.array(point, np.float64)
        g = np.asarray(_fx_grad(jnp.asarray(p, jnp.float32)), np.float64)
        for i in range(2):
            h = 1e-3
            pp, pm = p.copy(), p.copy()
            pp[i] += h
            pm[i] -= h
            fd = (float(_fx_loss(jnp.asarray(pp, jnp.float32)))
                  - float(_fx_loss(jnp.asarray(pm, jnp.float32)))) / (2 * h)
            assert np.isfinite(g[i])
            assert abs(g[i] - fd) <= 1e-2 * abs(fd) + 1e-5, (point, i, g[i], fd)


@pytest.mark.parametrize("rectify", [True, False])
def test_freeverb_gradient_equals_the_chunked_forwards(rectify):
    """The custom backward (the forward's adjoint written by hand: the chunked network run
    backwards in time, damping recursion truncated inside a chunk) against autodiff of the
    forward it stands for."""
    from diffsynth.effects import _freeverb_forward, _freeverb_wet, damping_doublings

    delays = freeverb_delay_lengths(16000)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((3, 4000)) * 0.1, jnp.float32)
    room, damp = jnp.asarray([0.7, 0.8, 0.95], jnp.float32), jnp.asarray([0.1, 0.25, 0.4], jnp.float32)
    g = jnp.asarray(rng.standard_normal((2, 3, 4000)), jnp.float32)
    n_doublings = damping_doublings(0.4, max(delays["comb_left"] + delays["comb_right"]))
    assert n_doublings == 4  # 0.4 ** 16 < 1e-6

    def loss(wet_fn):
        return lambda *a: jnp.sum(jnp.stack(wet_fn(*a)) * g)

    custom = jax.grad(loss(lambda a, r, d: _freeverb_wet(a, delays, r, d, rectify, 0.5, n_doublings)),
                      argnums=(0, 1, 2))(x, room, damp)
    plain = jax.grad(loss(lambda a, r, d: _freeverb_forward(a, delays, r, d, rectify, 0.5)),
                     argnums=(0, 1, 2))(x, room, damp)
    for name, c, p in zip(("input", "room", "damp"), custom, plain):
        c, p = np.asarray(c), np.asarray(p)
        assert np.max(np.abs(c - p)) <= 1e-4 * np.max(np.abs(p)), name
