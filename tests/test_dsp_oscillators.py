"""diffsynth.oscillators against NumPy transliterations of amsynth's Oscillator (README §6.3)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffsynth import losses
from diffsynth.control import hold_per_block, interpolate_per_block, strict_round
from diffsynth.oscillators import (accumulate_phase_float32, box_pulse, hard_sync, phase_from_frequency,
                                   phase_increment, polyblep_pulse, polyblep_saw, sample_and_hold, saw_triangle,
                                   sine, white_noise)
from gradcheck import spectral_l2

SR = 44100
K = 64
f32 = np.float32


# ---------------------------------------------------------------------------------------
# NumPy references
# ---------------------------------------------------------------------------------------


def lerp_blocks_ref(targets, n, initial):
    """amsynth Lerper per block: start + ((final - start)/n_block) * i, float32."""
    out = np.empty(n, np.float32)
    prev = f32(initial)
    for b, t in enumerate(targets):
        nb = min(K, n - b * K)
        t = f32(t)
        inc = f32((t - prev) / f32(nb))
        for i in range(nb):
            out[b * K + i] = f32(prev + f32(inc * f32(i)))
        prev = t
    return out


def amsynth_pulse_ref(targets, freqs, pw):
    """Oscillator::doSquare, per sample, in float64 (isolates the algorithm from rounding)."""
    two_pi, pi = 2 * np.pi, np.pi
    out = np.empty(len(freqs))
    rads = 0.0
    for b, t in enumerate(targets):
        nb = min(K, len(freqs) - b * K)
        radsper = two_pi * float(t) / SR
        pwscale = 1.0 if radsper < 0.3 else 1.0 - (radsper - 0.3) / 2
        pwrads = pi + pwscale * pi * min(pw, 0.9)
        lrads = rads
        for i in range(nb):
            radinc = two_pi * float(freqs[b * K + i]) / SR
            nrads = lrads + radinc
            if nrads >= two_pi:
                nrads -= two_pi
                y = 2.0 * (nrads / radinc) - 1.0
            elif nrads <= pwrads:
                y = 1.0
            elif lrads <= pwrads:
                y = 1.0 - 2.0 * ((nrads - pwrads) / radinc)
            else:
                y = -1.0
            out[b * K + i] = y
            lrads = nrads
        rads = lrads
    return out


def amsynth_pulse_duty(targets, pw):
    radsper = 2 * np.pi * np.asarray(targets, np.float64) / SR
    pwscale = np.where(radsper < 0.3, 1.0, 1.0 - (radsper - 0.3) / 2)
    return (0.5 + 0.5 * pwscale * min(pw, 0.9)).astype(np.float32)


def amsynth_saw_ref(t, shape):
    """amsynth saw(), float32 scalar ops, on a phase t in cycles."""
    t, s = f32(t), f32(shape)
    a = f32((s + f32(1)) / f32(2))
    if t < a / f32(2):
        return f32(f32(2) * t / a)
    if t > f32(1) - a / f32(2):
        return f32((f32(2) * t - f32(2)) / a)
    return f32((f32(1) - f32(2) * t) / (f32(1) - a))


def box_mean_bruteforce(phase, dt, duty, oversample=4000):
    """Mean of the ideal pulse (+1 on (0, d], -1 on (d, 1]) over (phase - dt, phase]."""
    u = (np.arange(oversample) + 0.5) / oversample
    pts = np.mod(phase[:, None] - dt * (1 - u[None, :]), 1.0)
    ideal = np.where((pts > 0) & (pts <= duty), 1.0, -1.0)
    return ideal.mean(axis=1)


# ---------------------------------------------------------------------------------------
# Phase
# ---------------------------------------------------------------------------------------


def test_phase_precision_10_seconds():
    n = 10 * SR
    i = np.arange(n)
    base = np.array([13.7, 440.3, 5000.123, 19999.9])[:, None]
    f = (base * (1 + 0.01 * np.sin(i / 5000.0))).astype(np.float32)
    ph = np.asarray(phase_from_frequency(f, SR, 0.25))
    ref = np.mod(0.25 + np.cumsum(f.astype(np.float64), axis=-1) / SR, 1.0)
    err = np.abs(ph - ref)
    err = np.minimum(err, 1 - err)
    assert err.max() < 1e-5, err.max()
    assert ph.min() >= 0 and ph.max() < 1


def test_phase_increment_before_output_and_shapes():
    f = jnp.full((3, 2, 100), 441.0)
    ph = phase_from_frequency(f, SR)
    assert ph.shape == (3, 2, 100)
    np.testing.assert_allclose(np.asarray(ph[0, 0, :3]), [0.01, 0.02, 0.03], atol=1e-7)
    ph0 = phase_from_frequency(jnp.zeros(5), SR, 0.3)
    np.testing.assert_allclose(np.asarray(ph0), 0.3, atol=1e-7)
    vm = jax.vmap(lambda x: phase_from_frequency(x, SR))(f.reshape(6, 100))
    np.testing.assert_array_equal(np.asarray(vm), np.asarray(ph).reshape(6, 100))


TWO_PI32 = f32(6.28318530717958647692)


def test_accumulate_phase_float32_matches_amsynth_radians():
    n = 3000
    targets = np.where(np.arange(-(-n // K)) < 20, 1000.3, 523.25).astype(np.float32)
    freqs = lerp_blocks_ref(targets, n, 0.0)
    twopi_rate = f32(TWO_PI32 / f32(SR))
    resets = np.zeros(n, bool)
    resets[[700, 1500]] = True
    # doSine / doSaw: rads += twopi_rate*f before output, ffmodf at the end of each block
    rads, ref_block = f32(0), np.empty(n, np.float32)
    # doSquare: wrap at the rising edge (every sample), sync resets before the increment
    lr, ref_sample = f32(0), np.empty(n, np.float32)
    for b in range(len(targets)):
        for i in range(min(K, n - b * K)):
            j = b * K + i
            rads = f32(rads + f32(twopi_rate * freqs[j]))
            ref_block[j] = rads
            lr = f32(0) if resets[j] else lr
            lr = f32(lr + f32(twopi_rate * freqs[j]))
            lr = f32(lr - TWO_PI32) if lr >= TWO_PI32 else lr
            ref_sample[j] = lr
        rads = f32(rads - f32(TWO_PI32 * f32(int(rads / TWO_PI32))))

    @jax.jit
    def run(f):
        inc = strict_round(jnp.float32(twopi_rate) * f)
        return (accumulate_phase_float32(inc, float(TWO_PI32), K),
                accumulate_phase_float32(inc, float(TWO_PI32), reset=resets, wrap="sample"))

    got_block, got_sample = run(jnp.asarray(freqs))
    np.testing.assert_array_equal(np.asarray(got_block), ref_block)
    np.testing.assert_array_equal(np.asarray(got_sample), ref_sample)
    exact = 2 * np.pi * np.asarray(phase_from_frequency(freqs, SR), np.float64)
    drift = np.angle(np.exp(1j * (ref_block - exact)))
    assert np.abs(drift).max() > 1e-4  # the float32 drift this function exists for


# ---------------------------------------------------------------------------------------
# Waveforms
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [-1.0, 0.0, 0.37, 1.0 - 2 * 440 / SR, 1.0])
def test_saw_triangle_matches_amsynth(shape):
    t = np.random.default_rng(0).uniform(0, 1, 2000).astype(np.float32)
    t[:4] = [0.0, 0.25, 0.5, 0.75]
    y = np.asarray(saw_triangle(t, shape))
    ref = np.array([amsynth_saw_ref(x, shape) if not (shape == 1.0 and x == 0.5) else 0.0 for x in t])
    np.testing.assert_allclose(y, ref, atol=2e-7)
    assert np.isfinite(y).all()


def test_sine_and_triangle_start():
    ph = phase_from_frequency(jnp.full(4, 100.0), SR)
    s = np.asarray(sine(ph))
    assert s[0] > 0 and np.all(np.diff(s) > 0)  # starts just above 0 and rises
    tri = np.asarray(saw_triangle(jnp.array([0.0, 0.125, 0.25, 0.5, 0.75]), 0.0))
    np.testing.assert_allclose(tri, [0, 0.5, 1, 0, -1], atol=1e-7)


@pytest.mark.parametrize("base_hz", [441.7, 3001.3, 12007.9, 19803.1])
@pytest.mark.parametrize("pw", [0.0, 0.5, 1.0])
def test_box_pulse_matches_amsynth(base_hz, pw):
    n = 2048
    nb = n // K
    targets = np.minimum(base_hz * (1 + 0.3 * np.sin(np.arange(nb) / 5.0)), SR / 2).astype(np.float32)
    freqs = lerp_blocks_ref(targets, n, targets[0])
    f = interpolate_per_block(targets, K, n, targets[0])
    np.testing.assert_array_equal(np.asarray(f), freqs)  # Lerper bit-exact
    duty = hold_per_block(jnp.asarray(amsynth_pulse_duty(targets, pw)), K, n)
    y = box_pulse(phase_from_frequency(f, SR), phase_increment(f, SR), duty, rising_edge_only=True)
    ref = amsynth_pulse_ref(targets, freqs, pw)
    # Edge samples scale float32 phase rounding (~1e-7 cycles) by 2/dt.
    np.testing.assert_allclose(np.asarray(y), ref, atol=4e-5 * 440 / base_hz + 2e-6)


@pytest.mark.parametrize("freq_hz,duty", [(19000.3, 0.2), (15000.7, 0.85), (800.1, 0.5), (4000.9, 0.05)])
def test_box_pulse_is_exact_interval_mean(freq_hz, duty):
    n = 400
    f = jnp.full(n, freq_hz)
    ph = phase_from_frequency(f, SR)
    dt = freq_hz / SR
    y = np.asarray(box_pulse(ph, phase_increment(f, SR), duty))
    ref = box_mean_bruteforce(np.asarray(ph, np.float64), dt, duty)
    np.testing.assert_allclose(y, ref, atol=2e-3)  # brute force resolution 1/4000 of a sample


@jax.jit
def _box_pulse_grads(duty, freq_hz):
    def loss(d, f):
        ff = jnp.full(256, f)
        return jnp.sum(box_pulse(phase_from_frequency(ff, SR), phase_increment(ff, SR), d) ** 2)

    return jax.grad(loss, argnums=(0, 1))(duty, freq_hz)


def test_box_pulse_gradients_finite_at_edges():
    for duty in (0.0, 0.05, 0.5, 0.95, 1.0):
        for freq_hz in (0.0, 2.3, 440.0, 22050.0):
            g = _box_pulse_grads(jnp.float32(duty), jnp.float32(freq_hz))
            assert all(np.isfinite(np.asarray(x)) for x in g), (duty, freq_hz)


def test_lerper_short_last_block_bit_exact():
    n = 2011  # last block of 27 samples
    targets = (300.0 + 50.0 * np.arange(-(-n // K))).astype(np.float32)
    f = jax.jit(lambda t: interpolate_per_block(t, K, n, 123.4))(targets)
    np.testing.assert_array_equal(np.asarray(f), lerp_blocks_ref(targets, n, 123.4))


def test_polyblep_waveforms():
    f = jnp.full(4096, 1234.5)
    ph = phase_from_frequency(f, SR)
    dt = phase_increment(f, SR)
    saw = np.asarray(polyblep_saw(ph, dt))
    t = np.asarray(ph)
    far = (t > 2 * 1234.5 / SR) & (t < 1 - 2 * 1234.5 / SR)
    np.testing.assert_allclose(saw[far], 2 * t[far] - 1, atol=1e-6)
    for d in (0.1, 0.5, 0.8):
        p = np.asarray(polyblep_pulse(ph, dt, d))
        assert np.abs(p).max() <= 1.0 + 1e-6
        assert abs(p.mean() - (2 * d - 1)) < 0.02
    g = jax.jit(jax.grad(lambda d, fr: jnp.sum(polyblep_pulse(ph, fr / SR, d) + polyblep_saw(ph, fr / SR))))(
        0.3, 1234.5)
    assert np.isfinite(g)


# ---------------------------------------------------------------------------------------
# Noise, S&H, sync
# ---------------------------------------------------------------------------------------


def test_white_noise_range_and_determinism():
    key = jax.random.PRNGKey(0)
    a = np.asarray(white_noise(key, (4, 5000)))
    b = np.asarray(white_noise(key, (4, 5000)))
    np.testing.assert_array_equal(a, b)
    assert a.min() >= -1 and a.max() < 1 and abs(a.mean()) < 0.02 and abs(a.var() - 1 / 3) < 0.02


def amsynth_sh_boundaries(n, period, count0=0):
    """Sample indices where Oscillator::doRandom draws a new value (count > period)."""
    count, idx = count0, []
    for i in range(n):
        if count > period:
            count = 0
            idx.append(i)
        count += 1
    return idx


@pytest.mark.parametrize("freq_hz", [3.0, 441.0, 1234.0])
def test_sample_and_hold_matches_amsynth_counter(freq_hz):
    n = 3000
    period = int(SR / freq_hz)
    vals = np.asarray(white_noise(jax.random.PRNGKey(1), (n,)))
    y = np.asarray(sample_and_hold(vals, period + 1, first_sample=period + 1, initial_value=0.0))
    ref = np.zeros(n, np.float32)
    held = 0.0
    bounds = set(amsynth_sh_boundaries(n, period))
    for i in range(n):
        if i in bounds:
            held = vals[i]
        ref[i] = held
    np.testing.assert_array_equal(y, ref)
    yb = sample_and_hold(jnp.stack([vals, vals]), jnp.array([3, 5]))
    assert yb.shape == (2, n) and float(yb[1, 7]) == float(vals[5])


def hard_sync_ref(slave_f, master_f, s0=0.0):
    """DO_OSC_SYNC + a slave accumulator, float64, phases in cycles."""
    s, ph = s0, 0.0
    out, resets = np.empty(len(slave_f)), []
    for i, (fs, fm) in enumerate(zip(slave_f, master_f)):
        s += float(fm) / SR
        if s >= 1.0:
            s -= 1.0
            ph = 0.0
            resets.append(i)
        ph = (ph + float(fs) / SR) % 1.0
        out[i] = ph
    return out, resets


def test_hard_sync_matches_reference():
    n = 4096
    nb = n // K
    master_targets = (220.0 * (1 + 0.2 * np.sin(np.arange(nb) / 7.0))).astype(np.float32)
    master = np.asarray(hold_per_block(jnp.asarray(master_targets), K, n))
    slave = np.asarray(interpolate_per_block(jnp.asarray(master_targets * 2.71), K, n, master_targets[0] * 2.71))
    ph, mph = hard_sync(slave, master, SR, master_initial_phase=0.37)
    ref, resets = hard_sync_ref(slave, master, 0.37)
    err = np.abs(np.asarray(ph) - ref)
    assert np.minimum(err, 1 - err).max() < 1e-5
    got = np.nonzero(np.diff(np.concatenate([[0.37], np.asarray(mph)])) < 0)[0]
    np.testing.assert_array_equal(got, resets)
    # At a reset sample the slave phase is exactly its own increment (box_pulse sees (0, dt]).
    r = resets[0]
    assert float(ph[r]) == float(phase_increment(slave, SR)[r])
    # jit + vmap
    b = jax.jit(jax.vmap(lambda s, m: hard_sync(s, m, SR)[0]))(jnp.stack([slave, slave]), jnp.stack([master, master]))
    assert b.shape == (2, n)


# ---------------------------------------------------------------------------------------
# Gradients vs finite differences
# ---------------------------------------------------------------------------------------


def _two_osc(detune, mix, n=4096):
    f1 = jnp.full(n, 220.0)
    o1 = saw_triangle(phase_from_frequency(f1, SR), 0.9)
    o2 = sine(phase_from_frequency(f1 * detune, SR))
    return (1 - mix) * o1 + mix * o2


_TARGET = _two_osc(1.07, 0.3)


_osc_value_and_grad = jax.jit(jax.value_and_grad(lambda p: spectral_l2(_two_osc(p[0], p[1]), _TARGET)))


def _osc_loss(params):
    return _osc_value_and_grad(params)[0]


def _osc_grad(params):
    return _osc_value_and_grad(params)[1]


def test_gradients_detune_and_mix_match_finite_differences():
    # The loss oscillates quickly with frequency (phase drift over 4096 samples), so the
    # detune step is small; mix enters linearly.
    for point in ([1.02, 0.5], [1.12, 0.7], [0.95, 0.2]):
        p = np.array(point, np.float64)
        g = np.asarray(_osc_grad(jnp.asarray(p, jnp.float32)), np.float64)
        for i, h in ((0, 1e-4), (1, 1e-2)):
            pp, pm = p.copy(), p.copy()
            pp[i] += h
            pm[i] -= h
            fd = (float(_osc_loss(jnp.asarray(pp, jnp.float32)))
                  - float(_osc_loss(jnp.asarray(pm, jnp.float32)))) / (2 * h)
            assert np.isfinite(g[i])
            assert abs(g[i] - fd) <= 1e-2 * abs(fd), (point, i, g[i], fd)


def test_multi_resolution_stft_loss_gradients_finite():
    g = jax.jit(jax.grad(lambda d: losses.multi_resolution_stft_loss(_two_osc(d, 0.5), _TARGET,
                                                                     fft_sizes=(256, 1024))))(1.02)
    assert np.isfinite(float(g))


def test_phase_from_block_frequency_matches_per_sample_phase():
    """The closed-form block-rate phase equals the per-sample phase of the same lerped curve."""
    from diffsynth.control import interpolate_per_block, n_blocks
    from diffsynth.oscillators import phase_from_block_frequency, phase_from_frequency

    sr, n, k = 44100, 66150, 64
    rng = np.random.default_rng(3)
    targets = jnp.asarray(rng.uniform(50, 2000, (3, n_blocks(n, k))), jnp.float32)
    fast = phase_from_block_frequency(targets, k, n, sr, initial_hz=100.0, initial_phase=0.25)
    ref = phase_from_frequency(interpolate_per_block(targets, k, n, 100.0), sr, initial_phase=0.25)
    d = np.abs(np.asarray(fast) - np.asarray(ref))
    assert fast.shape == (3, n)
    assert np.minimum(d, 1 - d).max() < 1e-4
    g = jax.grad(lambda t: jnp.sum(jnp.sin(2 * np.pi * phase_from_block_frequency(t, k, 640, sr))))(
        targets[:, :10])
    assert np.all(np.isfinite(np.asarray(g)))
