"""diffsynth.modulation and diffsynth.control against NumPy loops (amsynth README §5, §6.1, §6.3)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffsynth.control import (block_lengths, block_values_at, blocked_prefix_scan, hold_per_block,
                               interpolate_per_block, n_blocks, seconds_to_samples, strict_divide, strict_round)
from diffsynth.modulation import (LFO_WAVEFORMS, lfo_waveforms, one_pole_coefficient, one_pole_lowpass,
                                  parameter_smoother)
from diffsynth.oscillators import phase_from_frequency, phase_increment

SR = 44100
f32 = np.float32


# ---------------------------------------------------------------------------------------
# Control grid
# ---------------------------------------------------------------------------------------


def test_block_grid_helpers():
    n, k = 200, 64
    assert n_blocks(n, k) == 4 and list(block_lengths(n, k)) == [64, 64, 64, 8]
    v = jnp.array([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]])
    h = np.asarray(hold_per_block(v, k, n))
    assert h.shape == (2, n) and h[0, 63] == 1 and h[0, 64] == 2 and h[1, 199] == 8
    x = jnp.arange(n, dtype=jnp.float32)
    np.testing.assert_array_equal(np.asarray(block_values_at(x, k, "first")), [0, 64, 128, 192])
    np.testing.assert_array_equal(np.asarray(block_values_at(x, k, "last")), [63, 127, 191, 199])
    with pytest.raises(ValueError, match="n_blocks=4"):
        hold_per_block(v[:, :3], k, n)
    with pytest.raises(ValueError, match="position"):
        block_values_at(x, k, "middle")
    np.testing.assert_array_equal(seconds_to_samples([0.1, 1.0], 44100), [4410, 44100])


def test_interpolate_per_block_lerper():
    n, k = 150, 64
    t = jnp.array([[100.0, 200.0, 50.0]])
    y = np.asarray(jax.jit(lambda t: interpolate_per_block(t, k, n, 0.0))(t))
    assert y.shape == (1, n)
    assert y[0, 0] == 0 and y[0, 64] == 100 and y[0, 128] == 200  # target reached at the next block
    np.testing.assert_allclose(y[0, 1], 100 / 64, rtol=1e-7)
    np.testing.assert_allclose(y[0, 129], 200 + (50 - 200) / 22, rtol=1e-7)  # short last block: n = 22


def test_strict_round_and_divide_match_c_float32():
    rng = np.random.default_rng(0)
    a, b = rng.random((2, 10000)).astype(np.float32)
    got = jax.jit(lambda a, b: a + strict_round((b - a) * f32(0.005)))(a, b)
    np.testing.assert_array_equal(np.asarray(got), a + (b - a) * f32(0.005))
    got = jax.jit(lambda a: strict_divide(a * 1000, f32(37.0)))(a)
    np.testing.assert_array_equal(np.asarray(got), (a * f32(1000)) / f32(37))


def _affine(left, right):
    return left[0] * right[0], right[0] * left[1] + right[1]


@jax.jit
def _prefix_sums(x, a):
    (csum,) = blocked_prefix_scan(lambda u, v: (u[0] + v[0],), (x,), (0.0,))
    _, rec = blocked_prefix_scan(_affine, (a, x), (1.0, 0.0), block_size=16)
    return csum, rec


@pytest.mark.parametrize("n", [1, 100, 128, 3000])
def test_blocked_prefix_scan(n):
    rng = np.random.default_rng(n)
    x = rng.standard_normal((3, n)).astype(np.float32)
    a = rng.uniform(0.5, 1.0, (3, n)).astype(np.float32)
    csum, rec = _prefix_sums(x, a)
    np.testing.assert_allclose(np.asarray(csum), np.cumsum(x.astype(np.float64), axis=-1), atol=2e-4 * np.sqrt(n))
    ref = np.empty((3, n))
    y = np.zeros(3)
    for i in range(n):
        y = a[:, i] * y + x[:, i]
        ref[:, i] = y
    np.testing.assert_allclose(np.asarray(rec), ref, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------------------
# One-pole and parameter smoother
# ---------------------------------------------------------------------------------------


def one_pole_ref(x, p, y0):
    """IIRFilterFirstOrder low-pass: y = x*a0 + z; z = y*b1 (float32, no FMA)."""
    a0 = f32(1) - f32(p)
    z = f32(f32(y0) * f32(p))
    out = np.empty_like(x)
    for i, xi in enumerate(x):
        y = f32(f32(xi * a0) + z)
        z = f32(y * f32(p))
        out[i] = y
    return out


def test_one_pole_lowpass_matches_reference():
    p = float(np.exp(-np.pi / 2 * 4000 / SR))  # amsynth's VCA de-click pole, 0.867208
    x = np.random.default_rng(0).standard_normal(3000).astype(np.float32)
    ref = one_pole_ref(x, p, 0.25)
    scan = np.asarray(jax.jit(lambda x: one_pole_lowpass(x, p, 0.25, method="scan"))(x))
    np.testing.assert_allclose(scan, ref, rtol=0, atol=3e-7)
    for method in ("associative", "blocked", "auto"):
        y = np.asarray(jax.jit(lambda x, m=method: one_pole_lowpass(x, p, 0.25, method=m))(x))
        np.testing.assert_allclose(y, ref, atol=2e-6)
    with pytest.raises(ValueError, match="method"):
        one_pole_lowpass(x, p, method="fft")


def test_one_pole_time_varying_batched_and_grad():
    x = jnp.asarray(np.random.default_rng(1).standard_normal((2, 3, 500)).astype(np.float32))
    p = jnp.linspace(0.5, 0.99, 500)
    y = jax.jit(lambda x: one_pole_lowpass(x, p, jnp.zeros((2, 3))))(x)
    assert y.shape == (2, 3, 500)
    y1 = one_pole_ref(np.asarray(x[1, 2]), 0.0, 0.0)  # p = 0 passes through
    np.testing.assert_allclose(np.asarray(one_pole_lowpass(x[1, 2], 0.0)), y1, atol=1e-7)
    vm = jax.vmap(lambda xx: one_pole_lowpass(xx, p))(x.reshape(6, 500))
    np.testing.assert_allclose(np.asarray(vm), np.asarray(y).reshape(6, 500), atol=1e-6)
    tau = jnp.float32(0.002)
    g = jax.jit(jax.grad(lambda t: jnp.sum(one_pole_lowpass(x, one_pole_coefficient(t, SR)) ** 2)))(tau)
    assert np.isfinite(float(g))


def smoother_ref(targets, z0, rate=0.005):
    z = f32(z0)
    out = np.empty(len(targets), np.float32)
    for i, x in enumerate(targets):
        z = f32(z + f32(f32(f32(x) - z) * f32(rate)))
        out[i] = z
    return out


def test_parameter_smoother():
    n = 2000
    ref = smoother_ref(np.full(n, 0.8, np.float32), 0.1)
    closed = np.asarray(parameter_smoother(0.8, 0.005, 0.1, n))
    np.testing.assert_allclose(closed, ref, atol=2e-6)
    np.testing.assert_allclose(closed[0], 0.1 + (0.8 - 0.1) * 0.005, rtol=1e-6)  # update, then output
    exact = np.asarray(parameter_smoother(0.8, 0.005, 0.1, n, exact_rounding=True))
    np.testing.assert_array_equal(exact, ref)
    targets = np.where(np.arange(n) < 700, 0.2, 0.9).astype(np.float32)
    ref_t = smoother_ref(targets, 0.5)
    # A float32 loop stalls up to ~100 ulp short of its target; the one-pole does not.
    np.testing.assert_allclose(np.asarray(parameter_smoother(targets, 0.005, 0.5)), ref_t, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(parameter_smoother(targets, 0.005, 0.5, exact_rounding=True)), ref_t)
    batched = parameter_smoother(jnp.array([[0.0, 1.0]]), 0.005, jnp.array([0.5, 0.5]), 64)
    assert batched.shape == (1, 2, 64)
    g = jax.jit(jax.grad(lambda r, z: jnp.sum(parameter_smoother(0.8, r, z, 256) ** 2), argnums=(0, 1)))(0.005, 0.1)
    assert all(np.isfinite(float(v)) for v in g)


# ---------------------------------------------------------------------------------------
# LFO
# ---------------------------------------------------------------------------------------


def test_lfo_waveforms():
    n = 4410
    f = jnp.full((2, n), 100.0)  # 100 Hz: 441 samples per cycle
    ph = phase_from_frequency(f, SR)
    sh_period = int(SR / 100.0) + 1
    @jax.jit
    def both(ph, dt, key):
        kw = dict(triangle_shape=-2 * 100.0 / SR, saw_shape=1 - 2 * 100.0 / SR, sample_hold_first=sh_period)
        return (lfo_waveforms(ph, dt, key, sh_period, **kw),
                lfo_waveforms(ph, dt, key, sh_period, triangle_polarity=-1.0, **kw)[..., 2, :])

    w, tri_neg = both(ph, phase_increment(f, SR), jax.random.PRNGKey(3))
    assert w.shape == (2, len(LFO_WAVEFORMS), n)
    w = np.asarray(w[0])
    get = dict(zip(LFO_WAVEFORMS, w))
    assert 0 < get["sine"][0] < 0.02 and get["sine"][1] > get["sine"][0]  # starts at 0, rises
    assert get["sine"][109] > 0.99
    assert np.all(get["square"][1:200] == 1.0) and np.all(get["square"][230:430] == -1.0)
    assert get["triangle"][0] > 0 and abs(get["triangle"].max() - 1) < 1e-2 and abs(get["triangle"].min() + 1) < 1e-2
    assert get["saw_up"][100] > 0 and abs(get["saw_up"][219] - 1) < 0.02 and get["saw_up"][222] < -0.9
    np.testing.assert_array_equal(get["saw_down"], -get["saw_up"])
    assert get["noise"].min() >= -1 and get["noise"].max() < 1 and np.unique(get["noise"]).size > n // 2
    sh = get["sample_hold"]
    assert np.all(sh[:sh_period] == 0) and np.unique(sh[sh_period:2 * sh_period]).size == 1
    assert sh[sh_period] != sh[2 * sh_period]
    np.testing.assert_array_equal(np.asarray(tri_neg[0]), -get["triangle"])
