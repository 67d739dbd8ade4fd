"""diffsynth.filters against float64 references (numpy per-sample, scipy.signal.lfilter)."""

from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.signal

from diffsynth import filters as F

SR = 44100.0
R_MAX_Q = 2.0 * (1.0 - 0.97)  # amsynth r at resonance knob 1 (Q = 16.7)
KINDS = ("lowpass", "highpass", "bandpass", "notch")


def _numpy_coefficients(kind, cutoff_hz, r, sr):
    """README §6.5 formulas, float64, direct form (b0, b1, b2, a1, a2)."""
    k = np.tan(np.pi * np.float64(cutoff_hz) / sr)
    bh = 1 + r * k + k * k
    a1 = 2 * (k * k - 1) / bh
    a2 = (1 - r * k + k * k) / bh
    b = {
        "lowpass": (k * k / bh, 2 * k * k / bh, k * k / bh),
        "highpass": (1 / bh, -2 / bh, 1 / bh),
        "bandpass": (r * k / bh, 0 * k, -r * k / bh),
        "notch": ((1 + k * k) / bh, a1, (1 + k * k) / bh),
        "bypass": (1 + 0 * k, a1, a2),
    }[kind]
    return (*b, a1, a2)


def _direct64(c):
    """Direct-form coefficients in float64 from (possibly float32) delta-form fields."""
    c64 = F.BiquadCoefficients(*(np.asarray(f, np.float64) for f in c))
    return tuple(np.asarray(v, np.float64) for v in c64.direct())


_STATIC = ("block_size", "n_sections")
scan_jit = jax.jit(F.biquad_scan, static_argnames=_STATIC)
blocks_jit = jax.jit(F.biquad_blocks, static_argnames=_STATIC + ("inter_block",))
IMPLS = {
    "scan": scan_jit,
    "blocks": lambda x, c, block_size=64, n_sections=1: blocks_jit(
        x, c, block_size=block_size, n_sections=n_sections, inter_block="scan"),
    "assoc": lambda x, c, block_size=64, n_sections=1: blocks_jit(
        x, c, block_size=block_size, n_sections=n_sections, inter_block="associative"),
}


def _noise(n, seed=0, batch=()):
    return np.random.default_rng(seed).uniform(-1, 1, batch + (n,)).astype(np.float32)


def _rel_err(y, ref):
    return float(np.max(np.abs(np.asarray(y, np.float64) - ref)) / np.max(np.abs(ref)))


def _snr_db(ref, y):
    y = np.asarray(y, np.float64)
    return 10 * np.log10(np.sum(ref**2) / np.sum((ref - y) ** 2))


# ------------------------------------------------------------------------- coefficients


@pytest.mark.parametrize("kind", F.FILTER_KINDS)
def test_coefficients_match_readme_formulas(kind):
    cut = np.array([10.0, 50.0, 440.0, 5000.0, 0.99 * SR / 2])
    for r in (R_MAX_Q, 0.5, 2.0):
        ours = _direct64(F.biquad_coefficients(kind, cut, r, SR))
        ref = _numpy_coefficients(kind, cut, r, SR)
        for o, e in zip(ours, ref):
            # float32 coefficients: absolute error relative to the coefficient scale
            np.testing.assert_allclose(o, e, rtol=2e-5, atol=2e-6 * max(1.0, np.max(np.abs(e))))


def test_delta_form_round_trip_and_accuracy():
    with jax.enable_x64(True):
        c = F.biquad_coefficients("lowpass", jnp.asarray([50.0]), R_MAX_Q, SR)
        back = F.BiquadCoefficients.from_direct(*c.direct())
        for a, b in zip(c, back):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-9, atol=1e-15)
    # float32 delta fields are accurate where direct float32 a1, a2 are not
    c32 = F.biquad_coefficients("lowpass", np.float32(50.0), R_MAX_Q, SR)
    b0, b1, b2, a1, a2 = _numpy_coefficients("lowpass", 50.0, R_MAX_Q, SR)
    np.testing.assert_allclose(float(c32.a012), 1 + a1 + a2, rtol=1e-5)
    np.testing.assert_allclose(float(c32.a1p2), a1 + 2, rtol=1e-5)
    np.testing.assert_allclose(float(c32.b012), b0 + b1 + b2, rtol=1e-5)


@pytest.mark.parametrize("r", [2.0, 0.5, R_MAX_Q])
def test_frequency_response_at_cutoff(r):
    fc = 1000.0
    responses = {}
    for kind in KINDS:
        b0, b1, b2, a1, a2 = _direct64(F.biquad_coefficients(kind, fc, r, SR))
        _, h = scipy.signal.freqz([b0, b1, b2], [1, a1, a2], worN=[fc], fs=SR)
        responses[kind] = abs(h[0])
    np.testing.assert_allclose(responses["lowpass"], 1 / r, rtol=1e-4)  # -6 dB at Q = 0.5
    np.testing.assert_allclose(responses["highpass"], 1 / r, rtol=1e-4)
    np.testing.assert_allclose(responses["bandpass"], 1.0, rtol=1e-4)  # 0 dB peak
    assert responses["notch"] < 1e-3


def test_mixture_one_hot_and_linear():
    cut = np.geomspace(100, 8000, 5).astype(np.float32)
    eye = np.eye(len(F.FILTER_KINDS), dtype=np.float32)
    for i, kind in enumerate(F.FILTER_KINDS):
        hard = F.biquad_coefficients(kind, cut, 0.7, SR)
        soft = F.biquad_coefficients_mixture(eye[i], cut, 0.7, SR)
        for a, b in zip(hard, soft):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
    # one section: filtering with the mixed numerator == mixing the filtered outputs
    n = 640
    x = _noise(n)
    cut_b = np.geomspace(200, 6000, n // 64).astype(np.float32)
    w = np.array([0.4, 0.1, 0.2, 0.2, 0.1], np.float32)
    y_mix = scan_jit(x, F.biquad_coefficients_mixture(w, cut_b, 0.5, SR))
    y_sum = sum(w[i] * scan_jit(x, F.biquad_coefficients(k, cut_b, 0.5, SR))
                for i, k in enumerate(F.FILTER_KINDS))
    np.testing.assert_allclose(np.asarray(y_mix), np.asarray(y_sum), atol=2e-5)
    # batched weights [..., n_kinds] broadcast with per-block cutoffs
    wb = np.tile(w, (3, 1))[:, None, :]  # [3, 1, 5]
    c = F.biquad_coefficients_mixture(wb, cut_b, 0.5, SR)
    assert c.b0.shape == (3, n // 64)
    with pytest.raises(ValueError, match="last axis"):
        F.biquad_coefficients_mixture(w[:3], cut_b, 0.5, SR)


def test_unknown_kind_error():
    with pytest.raises(ValueError, match="expected one of"):
        F.biquad_coefficients("lowshelf", 100.0, 1.0, SR)


# ------------------------------------------------------------------------- filtering


def test_constant_coefficients_match_lfilter():
    n = 1000
    x = _noise(n, seed=1)
    for kind in F.FILTER_KINDS:
        c = F.biquad_coefficients(kind, np.float32([700.0]), 0.3, SR)  # [1]: constant
        b0, b1, b2, a1, a2 = (float(v[0]) for v in _direct64(c))
        ref1 = scipy.signal.lfilter([b0, b1, b2], [1, a1, a2], x.astype(np.float64))
        ref2 = scipy.signal.lfilter([b0, b1, b2], [1, a1, a2], ref1)
        for name in ("scan", "blocks"):
            assert _rel_err(IMPLS[name](x, c), ref1) < 1e-5, (kind, name)
            assert _rel_err(IMPLS[name](x, c, n_sections=2), ref2) < 1e-5, (kind, name)


@pytest.mark.parametrize("block_size", [1, 7, 64])
def test_time_varying_scan_blocks_reference_agree(block_size):
    n = 1000  # not a multiple of 7 or 64: the last block is partial
    x = _noise(n, seed=2)
    n_blocks = -(-n // block_size)
    rng = np.random.default_rng(3)
    # a random walk in log-cutoff and r: big jumps per block, but stable
    # (fast coefficient changes can make a time-varying biquad unstable)
    step = 0.5 if block_size > 1 else 0.02
    log_cut = np.log(1000) + np.cumsum(rng.uniform(-step, step, n_blocks))
    cut = np.exp(np.clip(log_cut, np.log(30), np.log(20000))).astype(np.float32)
    r = np.clip(1.0 + np.cumsum(rng.uniform(-step, step, n_blocks)), R_MAX_Q, 2.0)
    r = r.astype(np.float32)
    sections = (1, 2) if block_size > 1 else (2,)
    for kind in F.FILTER_KINDS:
        c = F.biquad_coefficients(kind, cut, r, SR)
        for n_sections in sections:
            ref = F.biquad_reference(x, c, block_size, n_sections)
            assert np.max(np.abs(ref)) < 1e3  # the test signal stays bounded
            for name, impl in IMPLS.items():
                if name == "assoc" and block_size != 64:
                    continue
                y = impl(x, c, block_size=block_size, n_sections=n_sections)
                assert _rel_err(y, ref) < 3e-5, (kind, n_sections, name)


def test_reference_matches_lfilter_blockwise():
    """The per-sample reference itself: blockwise lfilter with carried TDF-II state."""
    n, k = 300, 64
    x = _noise(n, seed=4).astype(np.float64)
    cut = np.float32([100.0, 3000.0, 800.0, 12000.0, 40.0])
    c = F.biquad_coefficients("bandpass", cut, 0.2, SR)
    coefs = _direct64(c)
    zi = np.zeros(2)
    out = []
    for j in range(len(cut)):
        b = [coefs[0][j], coefs[1][j], coefs[2][j]]
        a = [1.0, coefs[3][j], coefs[4][j]]
        yj, zi = scipy.signal.lfilter(b, a, x[j * k : (j + 1) * k], zi=zi)
        out.append(yj)
    np.testing.assert_allclose(F.biquad_reference(x, c, k), np.concatenate(out), rtol=1e-12,
                               atol=1e-12)


def test_bypass_is_identity():
    x = _noise(640, seed=5)
    c = F.biquad_coefficients("bypass", np.geomspace(20, 20000, 10), R_MAX_Q, SR)
    for name in ("scan", "blocks"):
        np.testing.assert_allclose(np.asarray(IMPLS[name](x, c, n_sections=2)), x, atol=1e-5)


def test_precision_lp24_float32_vs_float64():
    """LP24, Q 16.7, 44.1 kHz, 1.5 s white noise: float32 filters vs amsynth's float64."""
    n = int(1.5 * SR)
    x = _noise(n, seed=6)
    n_blocks = -(-n // 64)
    for fc, min_snr in ((50.0, 95.0), (5000.0, 100.0)):
        c32 = F.biquad_coefficients("lowpass", np.full(n_blocks, fc, np.float32), R_MAX_Q, SR)
        with jax.enable_x64(True):  # amsynth: coefficients and state in double
            c64 = F.biquad_coefficients("lowpass", np.full(n_blocks, fc), R_MAX_Q, SR)
        ref = F.biquad_reference(x, c64, 64, 2)
        for name in ("scan", "blocks"):
            snr = _snr_db(ref, IMPLS[name](x, c32, n_sections=2))
            assert snr > min_snr, (fc, name, snr)


# ------------------------------------------------------------------------- shapes, jit, vmap


def test_shapes_broadcast_jit_vmap():
    n = 200
    n_blocks = -(-n // 64)
    x = _noise(n, seed=7, batch=(3,))
    cut = np.geomspace(100, 5000, n_blocks).astype(np.float32)
    c = F.biquad_coefficients("lowpass", cut, 1.0, SR)
    for method in ("scan", "blocks"):
        f = jax.jit(lambda x, c: F.biquad_cascade(x, c, 2, method=method))
        y = f(x, c)
        assert y.shape == (3, n) and y.dtype == jnp.float32
        # vmap over the batch equals the batched call
        yv = jax.vmap(lambda xi: f(xi, c))(x)
        np.testing.assert_allclose(np.asarray(yv), np.asarray(y), atol=1e-6)
    # coefficients with a batch dim and a single signal; 2 batch dims
    cb = F.biquad_coefficients("lowpass", np.stack([cut, cut * 2]), 1.0, SR)
    assert f(x[0], cb).shape == (2, n)
    assert f(x.reshape(3, 1, n), c).shape == (3, 1, n)
    assert F.biquad(x, c).shape == (3, n)  # method="auto"
    assert F.DEFAULT_METHOD[jax.default_backend()] in ("scan", "blocks")


def test_coefficient_length_error():
    x = _noise(200)
    c = F.biquad_coefficients("lowpass", np.full(3, 100.0, np.float32), 1.0, SR)
    with pytest.raises(ValueError, match="n_blocks"):
        F.biquad(x, c, block_size=32)  # needs 7 blocks
    with pytest.raises(ValueError, match="n_sections"):
        F.biquad_cascade(x, F.biquad_coefficients("lowpass", np.float32([1e3]), 1.0, SR), 0)
    with pytest.raises(ValueError, match="method"):
        F.biquad(x, c, method="fast")


# ------------------------------------------------------------------------- gradients


def test_blocks_custom_vjp_matches_scan_autodiff():
    """biquad_blocks' hand-written adjoint == autodiff through biquad_scan."""
    n, k = 333, 7  # partial last block
    nb = -(-n // k)
    rng = np.random.default_rng(10)
    x = rng.uniform(-1, 1, (3, n)).astype(np.float32)
    cut = np.exp(np.log(800) + np.cumsum(rng.uniform(-0.3, 0.3, (3, nb)), -1)).astype(np.float32)
    r = rng.uniform(0.3, 2.0, (3, 1)).astype(np.float32)  # broadcast over blocks
    w = rng.standard_normal((3, n)).astype(np.float32)

    def loss(x, cut, r, impl):
        c = F.biquad_coefficients("notch", cut, r, SR)
        y = impl(x, c, block_size=k, n_sections=2)
        return jnp.sum(w * y) + 0.1 * jnp.sum(y**2)

    ref = jax.jit(jax.grad(loss, argnums=(0, 1, 2)), static_argnums=3)(x, cut, r, F.biquad_scan)
    for chunk in (0, 2):  # unchunked, and chunks of 2 rows (one padded row)
        impl = lambda x, c, block_size, n_sections: F.biquad_blocks(  # noqa: E731
            x, c, block_size, n_sections, batch_chunk=chunk)
        got = jax.jit(jax.grad(loss, argnums=(0, 1, 2)), static_argnums=3)(x, cut, r, impl)
        for a, b in zip(ref, got):
            assert a.shape == b.shape
            assert _rel_err(b, np.asarray(a, np.float64)) < 1e-4


@pytest.mark.parametrize("method", ["scan", "blocks"])
def test_gradients_finite_at_range_edges(method):
    n = 256
    x = _noise(n, seed=8)

    def loss(cutoff_hz, r):
        c = F.biquad_coefficients("lowpass", jnp.full((n // 64,), cutoff_hz), r, SR)
        y = F.biquad_cascade(x, c, 2, method=method)
        return jnp.mean(y**2)

    g = jax.jit(jax.grad(loss, argnums=(0, 1)))
    for cutoff in (10.0, 440.0, 0.99 * SR / 2):
        for r in (R_MAX_Q, 2.0):
            gc, gr = g(jnp.float32(cutoff), jnp.float32(r))
            assert np.isfinite(float(gc)) and np.isfinite(float(gr)), (cutoff, r)
    # mixture weights too
    gw = jax.grad(lambda w: jnp.mean(F.biquad(x, F.biquad_coefficients_mixture(
        w, jnp.full((n // 64,), 0.99 * SR / 2), R_MAX_Q, SR), method=method) ** 2))
    assert np.all(np.isfinite(np.asarray(gw(jnp.full(5, 0.2)))))
