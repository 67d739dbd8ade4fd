"""diffsynth.losses: values against numpy/librosa, gradient safety, finite differences."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import librosa
import numpy as np
import pytest

from diffsynth import filters as F
from diffsynth import losses as L

SR = 16000
N = 4000


def _signals(seed=0, batch=2):
    rng = np.random.default_rng(seed)
    t = np.arange(N) / SR
    f0 = rng.uniform(100, 1000, (batch, 1))
    x = np.sin(2 * np.pi * f0 * t) * np.exp(-3 * t) + 0.01 * rng.standard_normal((batch, N))
    return x.astype(np.float32)


def _np_mag(x, n_fft, hop, eps):
    s = librosa.stft(x.astype(np.float64), n_fft=n_fft, hop_length=hop)
    return np.sqrt(np.abs(s) ** 2 + eps)


# ------------------------------------------------------------------------- values


def test_multi_resolution_stft_loss_formula():
    p, t = _signals(0), _signals(1)
    sizes, eps = (64, 256, 1024), 1e-7
    mrstft = jax.jit(L.multi_resolution_stft_loss,
                     static_argnames=("fft_sizes", "linear_weight", "log_weight", "eps"))
    ours = mrstft(p, t, fft_sizes=sizes, linear_weight=1.0, log_weight=0.5, eps=eps)
    assert ours.shape == (2,)
    for b in range(2):
        terms = []
        for n in sizes:
            mp, mt = _np_mag(p[b], n, n // 4, eps), _np_mag(t[b], n, n // 4, eps)
            terms.append(np.mean(np.abs(mp - mt)) + 0.5 * np.mean(np.abs(np.log(mp) - np.log(mt))))
        np.testing.assert_allclose(float(ours[b]), np.mean(terms), rtol=1e-3)
    np.testing.assert_allclose(np.asarray(mrstft(p, p, fft_sizes=sizes)), 0.0, atol=1e-6)
    # target without batch dims broadcasts
    assert mrstft(p, t[0], fft_sizes=sizes).shape == (2,)
    mean_fn = jax.jit(lambda p, t: L.batch_mean(L.multi_resolution_stft_loss)(p, t, sizes))
    np.testing.assert_allclose(float(mean_fn(p, t)),
                               float(jnp.mean(mrstft(p, t, fft_sizes=sizes))), rtol=1e-6)


def test_log_mel_and_mfcc_l1_match_librosa_features():
    p, t = _signals(2), _signals(3)
    log_mel = jax.jit(lambda p, t: L.log_mel_l1(p, t, SR))(p, t)
    mfcc = jax.jit(lambda p, t: L.mfcc_l1(p, t, SR, n_mfcc=13))(p, t)
    for b in range(2):
        dp = librosa.power_to_db(librosa.feature.melspectrogram(y=p[b], sr=SR))
        dt = librosa.power_to_db(librosa.feature.melspectrogram(y=t[b], sr=SR))
        np.testing.assert_allclose(float(log_mel[b]), np.mean(np.abs(dp - dt)), rtol=1e-3)
        mp = librosa.feature.mfcc(y=p[b], sr=SR, n_mfcc=13)
        mt = librosa.feature.mfcc(y=t[b], sr=SR, n_mfcc=13)
        np.testing.assert_allclose(float(mfcc[b]), np.mean(np.abs(mp - mt)), rtol=1e-3)


def test_lsd_and_spectral_convergence_formulas():
    p, t = _signals(4), _signals(5)
    lsd = jax.jit(lambda p, t: L.log_spectral_distance(p, t, n_fft=512, hop_length=128))(p, t)
    sc = jax.jit(lambda p, t: L.spectral_convergence(p, t, n_fft=512, hop_length=128))(p, t)
    for b in range(2):
        sp = np.abs(librosa.stft(p[b].astype(np.float64), n_fft=512, hop_length=128)) ** 2
        st = np.abs(librosa.stft(t[b].astype(np.float64), n_fft=512, hop_length=128)) ** 2
        d = 10 * np.log10(sp + 1e-10) - 10 * np.log10(st + 1e-10)
        np.testing.assert_allclose(float(lsd[b]), np.mean(np.sqrt(np.mean(d**2, axis=0))),
                                   rtol=1e-3)
        mp, mt = np.sqrt(sp + 1e-7), np.sqrt(st + 1e-7)
        np.testing.assert_allclose(float(sc[b]), np.linalg.norm(mt - mp) / np.linalg.norm(mt),
                                   rtol=1e-3)


def test_snr_db():
    rng = np.random.default_rng(6)
    ref = rng.standard_normal((3, 1000)).astype(np.float32)
    noise = rng.standard_normal((3, 1000)).astype(np.float32)
    noise *= np.sqrt(np.sum(ref**2, -1, keepdims=True) / np.sum(noise**2, -1, keepdims=True))
    for db in (0.0, 20.0, 60.0):
        est = ref + noise * 10 ** (-db / 20)
        np.testing.assert_allclose(np.asarray(L.snr_db(ref, est)), db, atol=1e-2)
    same = np.asarray(L.snr_db(ref, ref))
    assert np.all(np.isfinite(same)) and np.all(same > 150)


def test_shape_errors():
    with pytest.raises(ValueError, match="n_samples"):
        L.multi_resolution_stft_loss(np.zeros(100), np.zeros(101))
    with pytest.raises(ValueError, match="broadcast"):
        L.snr_db(np.zeros((2, 100)), np.zeros((3, 100)))
    with pytest.raises(ValueError, match="eps"):
        L.multi_resolution_stft_loss(np.zeros(100), np.zeros(100), eps=0.0)


# ------------------------------------------------------------------------- gradients


ALL_LOSSES = {
    "mrstft": lambda p, t: L.multi_resolution_stft_loss(p, t),
    "log_mel": lambda p, t: L.log_mel_l1(p, t, SR, n_fft=512, hop_length=128, n_mels=40),
    "mfcc": lambda p, t: L.mfcc_l1(p, t, SR, n_mfcc=13, n_fft=512, hop_length=128, n_mels=40),
    "lsd": lambda p, t: L.log_spectral_distance(p, t, n_fft=512, hop_length=128),
    "sc": lambda p, t: L.spectral_convergence(p, t, n_fft=512, hop_length=128),
    "snr": lambda p, t: L.snr_db(t, p),
}


@pytest.mark.parametrize("name", sorted(ALL_LOSSES))
def test_gradients_finite_for_silence_and_equality(name):
    fn = ALL_LOSSES[name]
    zero = jnp.zeros((1, 2048))
    sound = jnp.asarray(_signals(7, 1)[:, :2048])
    grad = jax.jit(jax.grad(lambda p, t: jnp.sum(fn(p, t))))
    for p, t in ((zero, zero), (zero, sound), (sound, zero), (sound, sound)):
        g = np.asarray(grad(p, t))
        assert np.all(np.isfinite(g)), name
        assert np.all(np.isfinite(np.asarray(jax.jit(fn)(p, t)))), name


N_FD = 1600  # 0.1 s at 16 kHz, 25 control blocks of 64


def _voice_loss(method):
    """MR-STFT loss of noise through a time-varying LP24 (cutoff x decaying envelope)."""
    n_blocks = N_FD // 64
    env = jnp.exp(-jnp.arange(n_blocks) / 10.0)  # [n_blocks]

    def render(cutoff_hz, r, x):
        cut = 50.0 + cutoff_hz * env
        c = F.biquad_coefficients("lowpass", cut, r, SR)
        return F.biquad_cascade(x, c, 2, method=method)

    def loss(cutoff_hz, r, x, target):
        return L.multi_resolution_stft_loss(render(cutoff_hz, r, x), target,
                                            fft_sizes=(64, 256, 1024))

    return render, loss


@pytest.mark.parametrize("method", ["scan", "blocks"])
def test_mrstft_gradient_through_filter_matches_finite_differences(method):
    render, loss = _voice_loss(method)
    x32 = np.random.default_rng(8).uniform(-1, 1, N_FD).astype(np.float32)
    points = [(300.0, 0.5), (2000.0, 1.5), (5000.0, 0.1)]
    with jax.enable_x64(True):
        x = jnp.asarray(x32, jnp.float64)
        target = render(jnp.float64(1200.0), jnp.float64(0.8), x)
        f = jax.jit(loss)
        g = jax.jit(jax.grad(loss, argnums=(0, 1)))
        grads64 = []
        for cutoff, r in points:
            auto = [float(v) for v in g(jnp.float64(cutoff), jnp.float64(r), x, target)]
            grads64.append(auto)
            # small steps: the L1 terms have kinks, which larger steps straddle
            for i, (v, h) in enumerate(((cutoff, 1e-6 * cutoff), (r, 1e-6 * r))):
                args = [jnp.float64(cutoff), jnp.float64(r)]
                args[i] = jnp.float64(v + h)
                up = float(f(*args, x, target))
                args[i] = jnp.float64(v - h)
                down = float(f(*args, x, target))
                fd = (up - down) / (2 * h)
                assert abs(auto[i] - fd) <= 1e-2 * abs(fd), (method, cutoff, r, i, auto[i], fd)
    if method == "scan":
        return
    # float32 autodiff agrees with the float64 gradient
    g32 = jax.jit(jax.grad(loss, argnums=(0, 1)))
    target32 = render(jnp.float32(1200.0), jnp.float32(0.8), jnp.asarray(x32))
    for (cutoff, r), ref in zip(points, grads64):
        auto = [float(v) for v in g32(jnp.float32(cutoff), jnp.float32(r), x32, target32)]
        np.testing.assert_allclose(auto, ref, rtol=2e-2)


def test_gradients_finite_through_filter_at_extremes():
    render, loss = _voice_loss("auto")
    x = np.random.default_rng(9).uniform(-1, 1, N_FD).astype(np.float32)
    target = render(jnp.float32(1000.0), jnp.float32(1.0), x)
    g = jax.jit(jax.grad(loss, argnums=(0, 1)))
    for cutoff in (10.0 - 50.0, 0.99 * SR / 2 - 50.0):  # cut = 50 + c env: 10 Hz .. 0.99 Nyquist
        for r in (2.0 * (1 - 0.97), 2.0):
            gc, gr = g(jnp.float32(cutoff), jnp.float32(r), x, target)
            assert np.isfinite(float(gc)) and np.isfinite(float(gr)), (cutoff, r)
