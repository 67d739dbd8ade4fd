"""diffsynth.spectral against librosa (relative error <= 1e-3)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import librosa
import numpy as np
import pytest

from diffsynth import spectral as S

SR = 16000


def _signal(n=8000, seed=0):
    t = np.arange(n) / SR
    rng = np.random.default_rng(seed)
    chirp = np.sin(2 * np.pi * (200 * t + 2000 * t**2))
    return (0.5 * chirp + 0.05 * rng.standard_normal(n)).astype(np.float32)


def _rel(ours, ref):
    ours = np.asarray(ours)
    return float(np.max(np.abs(ours - ref)) / np.max(np.abs(ref)))


def test_librosa_default_pad_mode_is_constant():
    import inspect

    assert inspect.signature(librosa.stft).parameters["pad_mode"].default == "constant"
    assert inspect.signature(S.stft).parameters["pad_mode"].default == "constant"


@pytest.mark.parametrize(
    "n_fft,hop,win", [(2048, 512, None), (256, 64, None), (64, 16, None), (512, 100, 400)]
)
def test_stft_matches_librosa(n_fft, hop, win):
    x = _signal()
    for pad_mode in ("constant", "reflect"):
        ref = librosa.stft(x, n_fft=n_fft, hop_length=hop, win_length=win, pad_mode=pad_mode)
        ours = S.stft(x, n_fft, hop, win, pad_mode=pad_mode)
        assert ours.shape == ref.shape
        assert _rel(ours, ref) < 1e-3
        # the edge frames depend on the padding: check them on their own
        assert _rel(ours[:, :2], ref[:, :2]) < 1e-3
    ref = librosa.stft(x, n_fft=n_fft, hop_length=hop, win_length=win, center=False)
    assert _rel(S.stft(x, n_fft, hop, win, center=False), ref) < 1e-3
    frames_major = S.stft_frames_major(x, n_fft, hop, win, center=False)
    np.testing.assert_array_equal(np.asarray(frames_major).T,
                                  np.asarray(S.stft(x, n_fft, hop, win, center=False)))


def test_mel_filterbank_cached_and_equal():
    a = S.mel_filterbank(SR, 1024, 64, fmin=20.0, fmax=7000.0)
    b = S.mel_filterbank(SR, 1024, 64, fmin=20.0, fmax=7000.0)
    assert a is b and not a.flags.writeable
    np.testing.assert_array_equal(a, librosa.filters.mel(sr=SR, n_fft=1024, n_mels=64, fmin=20.0,
                                                         fmax=7000.0))


def test_mel_db_mfcc_match_librosa():
    x = _signal()
    mel_ref = librosa.feature.melspectrogram(y=x, sr=SR)
    mel = S.mel_spectrogram(x, SR)
    assert mel.shape == mel_ref.shape and _rel(mel, mel_ref) < 1e-3

    db_ref = librosa.power_to_db(mel_ref)
    db = S.log_mel_spectrogram(x, SR)
    assert _rel(db, db_ref) < 1e-3
    db_ref = librosa.power_to_db(mel_ref, ref=np.max, amin=1e-8, top_db=None)
    assert _rel(S.power_to_db(mel, ref="max", amin=1e-8, top_db=None), db_ref) < 1e-3

    mfcc_ref = librosa.feature.mfcc(y=x, sr=SR)
    assert _rel(S.mfcc(x, SR), mfcc_ref) < 1e-3
    kw = dict(n_mfcc=13, n_fft=1024, hop_length=256, n_mels=64, fmin=30.0, fmax=7000.0)
    mfcc_ref = librosa.feature.mfcc(y=x, sr=SR, lifter=22, **kw)
    assert _rel(S.mfcc(x, SR, lifter=22, **kw), mfcc_ref) < 1e-3


def test_dct_matrix_is_scipy_ortho():
    import scipy.fft

    d = S.dct_matrix(13, 40)
    ref = scipy.fft.dct(np.eye(40), type=2, norm="ortho", axis=0)[:13]
    np.testing.assert_allclose(d, ref, atol=1e-6)


def test_batch_jit_vmap_shapes():
    x = np.stack([_signal(4000, s) for s in range(3)]).reshape(3, 1, 4000)
    f = jax.jit(lambda x: S.mfcc(x, SR, n_mfcc=13, n_fft=512, hop_length=128, n_mels=40))
    out = f(x)
    assert out.shape == (3, 1, 13, 1 + 4000 // 128)
    one = f(x[1, 0])
    np.testing.assert_allclose(np.asarray(out[1, 0]), np.asarray(one), rtol=1e-4, atol=1e-3)
    v = jax.jit(jax.vmap(lambda xi: S.log_mel_spectrogram(xi, SR, n_fft=512, hop_length=128,
                                                         n_mels=40)))
    assert v(x[:, 0]).shape == (3, 40, 1 + 4000 // 128)
    # top_db is per example: a silent example next to a loud one keeps its own floor
    mixed = np.stack([x[0, 0], np.zeros(4000, np.float32)])
    db = jax.jit(lambda x: S.log_mel_spectrogram(x, SR, n_fft=512, hop_length=128,
                                                 n_mels=40))(mixed)  # batched, not vmapped
    np.testing.assert_allclose(np.asarray(db[1]), -100.0, atol=1e-4)


def test_gradients_finite_for_silence():
    x = jnp.zeros(2048)
    for fn in (
        lambda x: jnp.sum(S.magnitude_spectrogram(x, 256, 64)),
        lambda x: jnp.sum(S.log_mel_spectrogram(x, SR, n_fft=256, hop_length=64, n_mels=20)),
        lambda x: jnp.sum(S.mfcc(x, SR, n_mfcc=5, n_fft=256, hop_length=64, n_mels=20)),
    ):
        g = jax.jit(jax.grad(fn))(x)
        assert np.all(np.isfinite(np.asarray(g)))


def test_argument_errors():
    with pytest.raises(ValueError, match="pad_mode"):
        S.stft(np.zeros(100, np.float32), 64, 16, pad_mode="edge")
    with pytest.raises(ValueError, match="too short"):
        S.stft(np.zeros(10, np.float32), 64, 16, center=False)
    with pytest.raises(ValueError, match="ref"):
        S.power_to_db(jnp.ones((2, 2)), ref="min")
