"""Spectral features in JAX that agree with librosa (>= 0.10) conventions.

Pure functions, jit/vmap/grad safe, leading batch dims ``...``, time last. Layouts follow
librosa: an STFT is ``[..., n_freq, n_frames]`` with ``n_freq = n_fft // 2 + 1``; mel
spectrograms ``[..., n_mels, n_frames]``; MFCCs ``[..., n_mfcc, n_frames]``.

Conventions (checked against librosa 0.11 by ``tests/test_dsp_spectral.py``):

* STFT: periodic Hann window (``scipy.signal.get_window('hann', n, fftbins=True)``),
  ``center=True`` pads ``n_fft // 2`` on both sides with ``pad_mode='constant'``
  (zeros; librosa's default since 0.10) or ``'reflect'``;
  ``n_frames = 1 + (n_samples + 2 (n_fft // 2) - n_fft) // hop_length``; no
  normalisation (a full-scale sine of amplitude 1 gives a peak of about ``n_fft / 4``).
* Mel filterbank: ``librosa.filters.mel`` (Slaney scale and area norm by default),
  computed once in numpy and cached per argument set.
* dB: ``librosa.power_to_db`` with ``ref``, ``amin`` and ``top_db``; the ``top_db``
  floor and ``ref="max"`` are taken per example (over the last two axes), where
  librosa takes them over its whole input array.
* MFCC: DCT-II with ``norm='ortho'`` over the mel axis of the log-mel (dB)
  spectrogram, first ``n_mfcc`` rows, optional liftering (``librosa.feature.mfcc``).
"""

from __future__ import annotations

import functools
from typing import Union

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "stft",
    "stft_frames_major",
    "power_spectrogram",
    "magnitude_spectrogram",
    "safe_magnitude",
    "mel_filterbank",
    "mel_spectrogram",
    "power_to_db",
    "log_mel_spectrogram",
    "dct_matrix",
    "mfcc",
]

# ---------------------------------------------------------------------------------------
# Constants computed once in numpy
# ---------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def _window(n_fft: int, win_length: int) -> np.ndarray:
    """Periodic Hann of ``win_length`` zero-padded (centred) to ``n_fft``, float32."""
    if win_length > n_fft or win_length < 1:
        raise ValueError(f"win_length must be in [1, n_fft={n_fft}]; got {win_length}")
    n = np.arange(win_length)
    w = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / win_length)
    left = (n_fft - win_length) // 2
    out = np.zeros(n_fft)
    out[left : left + win_length] = w
    return out.astype(np.float32)


@functools.lru_cache(maxsize=64)
def _mel_filterbank_np(
    sample_rate: float,
    n_fft: int,
    n_mels: int,
    fmin: float,
    fmax: float | None,
    htk: bool,
    norm: Union[str, float, None],
) -> np.ndarray:
    import librosa  # imported lazily: only needed to build the (cached) constant

    fb = librosa.filters.mel(
        sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, htk=htk, norm=norm,
        dtype=np.float32,
    )
    fb.setflags(write=False)
    return fb


def mel_filterbank(
    sample_rate: float,
    n_fft: int,
    n_mels: int = 128,
    fmin: float = 0.0,
    fmax: float | None = None,
    htk: bool = False,
    norm: Union[str, float, None] = "slaney",
) -> np.ndarray:
    """``librosa.filters.mel`` as a cached, read-only float32 numpy array.

    Args:
      sample_rate: sample rate (Hz).
      n_fft: FFT size (samples).
      n_mels: number of mel bands.
      fmin, fmax: band edges (Hz); ``fmax=None`` means ``sample_rate / 2``.
      htk: HTK mel scale instead of Slaney.
      norm: ``"slaney"`` (area normalisation), a p-norm order, or ``None``.

    Returns:
      Filterbank, shape ``[n_mels, n_fft // 2 + 1]``.
    """
    return _mel_filterbank_np(float(sample_rate), int(n_fft), int(n_mels), float(fmin),
                              None if fmax is None else float(fmax), bool(htk), norm)


@functools.lru_cache(maxsize=64)
def dct_matrix(n_mfcc: int, n_mels: int) -> np.ndarray:
    """Orthonormal DCT-II matrix (``scipy.fft.dct(..., type=2, norm='ortho')``).

    Returns:
      float32 array ``[n_mfcc, n_mels]``; ``mfcc = dct_matrix @ log_mel``.
    """
    if not 1 <= n_mfcc <= n_mels:
        raise ValueError(f"n_mfcc must be in [1, n_mels={n_mels}]; got {n_mfcc}")
    k = np.arange(n_mfcc)[:, None]
    n = np.arange(n_mels)[None, :]
    d = np.cos(np.pi * k * (2 * n + 1) / (2 * n_mels)) * np.sqrt(2.0 / n_mels)
    d[0] *= 1.0 / np.sqrt(2.0)
    d = d.astype(np.float32)
    d.setflags(write=False)
    return d


# ---------------------------------------------------------------------------------------
# STFT
# ---------------------------------------------------------------------------------------


def _frames(x: jax.Array, n_fft: int, hop_length: int) -> jax.Array:
    """[..., n] -> [..., n_frames, n_fft], frames starting every hop_length samples.

    When hop divides n_fft the frames are built from strided slices (whose gradient is a
    cheap pad-and-add) instead of a gather (whose gradient is a scatter-add).
    """
    n = x.shape[-1]
    n_frames = 1 + (n - n_fft) // hop_length
    if n_fft % hop_length == 0:
        r = n_fft // hop_length
        n_chunks = n_frames + r - 1
        chunks = x[..., : n_chunks * hop_length].reshape(x.shape[:-1] + (n_chunks, hop_length))
        parts = [chunks[..., i : i + n_frames, :] for i in range(r)]
        return jnp.concatenate(parts, axis=-1)
    idx = np.arange(n_frames)[:, None] * hop_length + np.arange(n_fft)[None, :]
    return x[..., idx]


def stft_frames_major(
    x: jax.Array,
    n_fft: int = 2048,
    hop_length: int | None = None,
    win_length: int | None = None,
    center: bool = True,
    pad_mode: str = "constant",
) -> jax.Array:
    """:func:`stft` in the layout ``[..., n_frames, n_freq]`` (no transpose; faster when
    the layout does not matter, e.g. inside a loss)."""
    win_length = n_fft if win_length is None else int(win_length)
    hop_length = win_length // 4 if hop_length is None else int(hop_length)
    if hop_length < 1:
        raise ValueError(f"hop_length must be >= 1; got {hop_length}")
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.float32)
    if center:
        if pad_mode not in ("constant", "reflect"):
            raise ValueError(f"pad_mode must be 'constant' or 'reflect'; got {pad_mode!r}")
        pad = [(0, 0)] * (x.ndim - 1) + [(n_fft // 2, n_fft // 2)]
        x = jnp.pad(x, pad, mode=pad_mode)
    if x.shape[-1] < n_fft:
        raise ValueError(
            f"signal too short: {x.shape[-1]} samples (after padding) < n_fft = {n_fft}; "
            "use a smaller n_fft or center=True"
        )
    frames = _frames(x, n_fft, hop_length) * jnp.asarray(_window(n_fft, win_length), x.dtype)
    return jnp.fft.rfft(frames, n=n_fft, axis=-1)


def stft(
    x: jax.Array,
    n_fft: int = 2048,
    hop_length: int | None = None,
    win_length: int | None = None,
    center: bool = True,
    pad_mode: str = "constant",
) -> jax.Array:
    """Short-time Fourier transform with librosa's conventions (Hann window).

    Args:
      x: signal. Shape ``[..., n_samples]``; with ``center=False`` at least ``n_fft``.
      n_fft: FFT size (samples).
      hop_length: hop (samples); default ``win_length // 4``.
      win_length: window length (samples), ``<= n_fft``, zero-padded to ``n_fft``
        (centred); default ``n_fft``.
      center: pad ``n_fft // 2`` samples on both sides so frame ``t`` is centred at
        ``t * hop_length``.
      pad_mode: ``"constant"`` (zeros, librosa's default) or ``"reflect"``.

    Returns:
      Complex STFT, shape ``[..., n_fft // 2 + 1, n_frames]``.
    """
    spec = stft_frames_major(x, n_fft, hop_length, win_length, center, pad_mode)
    return jnp.swapaxes(spec, -1, -2)


def power_spectrogram(spec: jax.Array) -> jax.Array:
    """``|spec|^2`` (real, same shape as ``spec``)."""
    return jnp.real(spec) ** 2 + jnp.imag(spec) ** 2


def safe_magnitude(power: jax.Array, eps: float = 0.0) -> jax.Array:
    """``sqrt(power + eps)`` with a finite gradient everywhere, also at ``power + eps = 0``.

    With ``eps > 0`` the square root never sees 0. With ``eps = 0`` it is the exact
    magnitude, and the gradient at 0 is defined as 0 (double-``where``).
    """
    p = power + eps
    positive = p > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, p, 1.0)), 0.0)


def magnitude_spectrogram(
    x: jax.Array,
    n_fft: int = 2048,
    hop_length: int | None = None,
    win_length: int | None = None,
    center: bool = True,
    pad_mode: str = "constant",
    power: float = 1.0,
    eps: float = 0.0,
) -> jax.Array:
    """``|STFT|^power`` with a gradient-safe magnitude (see :func:`safe_magnitude`).

    Args:
      x: signal, shape ``[..., n_samples]``.
      n_fft, hop_length, win_length, center, pad_mode: as :func:`stft`.
      power: exponent of the magnitude (1 = magnitude, 2 = power).
      eps: added to ``|X|^2`` inside the square root (0 = exact).

    Returns:
      Shape ``[..., n_fft // 2 + 1, n_frames]``.
    """
    p = power_spectrogram(stft(x, n_fft, hop_length, win_length, center, pad_mode))
    if power == 2.0:
        return p + eps
    return safe_magnitude(p, eps) ** power


# ---------------------------------------------------------------------------------------
# Mel, dB, MFCC
# ---------------------------------------------------------------------------------------


def mel_spectrogram(
    x: jax.Array,
    sample_rate: float,
    n_fft: int = 2048,
    hop_length: int = 512,
    n_mels: int = 128,
    fmin: float = 0.0,
    fmax: float | None = None,
    power: float = 2.0,
    center: bool = True,
    pad_mode: str = "constant",
    htk: bool = False,
    norm: Union[str, float, None] = "slaney",
) -> jax.Array:
    """Mel spectrogram, as ``librosa.feature.melspectrogram`` (defaults included).

    Args:
      x: signal, shape ``[..., n_samples]``.
      sample_rate: sample rate (Hz).
      n_fft, hop_length, center, pad_mode: as :func:`stft`.
      n_mels, fmin, fmax, htk, norm: as :func:`mel_filterbank`.
      power: exponent of the STFT magnitude (2 = power, 1 = magnitude).

    Returns:
      Shape ``[..., n_mels, n_frames]``.
    """
    s = magnitude_spectrogram(x, n_fft, hop_length, None, center, pad_mode, power=power)
    fb = jnp.asarray(mel_filterbank(sample_rate, n_fft, n_mels, fmin, fmax, htk, norm), s.dtype)
    return jnp.einsum("mf,...ft->...mt", fb, s, precision=jax.lax.Precision.HIGHEST)


def power_to_db(
    s: jax.Array,
    ref: Union[float, str] = 1.0,
    amin: float = 1e-10,
    top_db: float | None = 80.0,
) -> jax.Array:
    """``10 log10(max(amin, s) / ref)`` floored at ``max - top_db`` (``librosa.power_to_db``).

    Args:
      s: power spectrogram, shape ``[..., n_bins, n_frames]`` (at least 2-D when
        ``top_db`` is set or ``ref="max"``).
      ref: reference power (a number), or ``"max"``: the per-example maximum of ``s``
        over the last two axes (librosa's ``ref=np.max``).
      amin: floor on ``s`` and ``ref`` (> 0), which also keeps the gradient finite.
      top_db: dynamic range below the per-example maximum (dB), or ``None`` (no floor).

    Returns:
      dB values, same shape as ``s``.
    """
    if amin <= 0:
        raise ValueError(f"amin must be > 0; got {amin}")
    log_spec = 10.0 * jnp.log10(jnp.maximum(amin, s))
    if isinstance(ref, str):
        if ref != "max":
            raise ValueError(f"ref must be a positive number or 'max'; got {ref!r}")
        ref_db = 10.0 * jnp.log10(jnp.maximum(amin, jnp.max(s, axis=(-2, -1), keepdims=True)))
    else:
        if ref <= 0:
            raise ValueError(f"ref must be > 0; got {ref}")
        ref_db = 10.0 * np.log10(max(amin, float(ref)))
    log_spec = log_spec - ref_db
    if top_db is not None:
        if top_db < 0:
            raise ValueError(f"top_db must be >= 0 or None; got {top_db}")
        floor = jnp.max(log_spec, axis=(-2, -1), keepdims=True) - top_db
        log_spec = jnp.maximum(log_spec, floor)
    return log_spec


def log_mel_spectrogram(
    x: jax.Array,
    sample_rate: float,
    n_fft: int = 2048,
    hop_length: int = 512,
    n_mels: int = 128,
    fmin: float = 0.0,
    fmax: float | None = None,
    ref: Union[float, str] = 1.0,
    amin: float = 1e-10,
    top_db: float | None = 80.0,
    center: bool = True,
    pad_mode: str = "constant",
) -> jax.Array:
    """Log-mel power spectrogram in dB: ``power_to_db(mel_spectrogram(x))``.

    Args:
      x: signal, shape ``[..., n_samples]``.
      sample_rate: sample rate (Hz).
      n_fft, hop_length, n_mels, fmin, fmax, center, pad_mode: as :func:`mel_spectrogram`.
      ref, amin, top_db: as :func:`power_to_db`.

    Returns:
      dB, shape ``[..., n_mels, n_frames]``.
    """
    m = mel_spectrogram(x, sample_rate, n_fft, hop_length, n_mels, fmin, fmax,
                        center=center, pad_mode=pad_mode)
    return power_to_db(m, ref=ref, amin=amin, top_db=top_db)


def mfcc(
    x: jax.Array,
    sample_rate: float,
    n_mfcc: int = 20,
    n_fft: int = 2048,
    hop_length: int = 512,
    n_mels: int = 128,
    fmin: float = 0.0,
    fmax: float | None = None,
    lifter: float = 0.0,
    amin: float = 1e-10,
    top_db: float | None = 80.0,
    center: bool = True,
    pad_mode: str = "constant",
) -> jax.Array:
    """MFCCs as ``librosa.feature.mfcc(y=x, sr=sample_rate, ...)`` (DCT-II, ortho).

    ``mfcc = DCT(power_to_db(mel_spectrogram(x), ref=1, amin, top_db))[:n_mfcc]``,
    then, if ``lifter > 0``, rows scaled by ``1 + (lifter / 2) sin(pi (k + 1) / lifter)``.

    Args:
      x: signal, shape ``[..., n_samples]``.
      sample_rate: sample rate (Hz).
      n_mfcc: number of coefficients.
      n_fft, hop_length, n_mels, fmin, fmax, center, pad_mode: as :func:`mel_spectrogram`.
      lifter: cepstral liftering coefficient (0 = none).
      amin, top_db: as :func:`power_to_db`.

    Returns:
      Shape ``[..., n_mfcc, n_frames]``.
    """
    s = log_mel_spectrogram(x, sample_rate, n_fft, hop_length, n_mels, fmin, fmax,
                            ref=1.0, amin=amin, top_db=top_db, center=center, pad_mode=pad_mode)
    d = dct_matrix(n_mfcc, n_mels)
    if lifter > 0:
        li = 1.0 + (lifter / 2.0) * np.sin(np.pi * np.arange(1, n_mfcc + 1) / lifter)
        d = (d * li[:, None]).astype(np.float32)
    elif lifter < 0:
        raise ValueError(f"lifter must be >= 0; got {lifter}")
    return jnp.einsum("km,...mt->...kt", jnp.asarray(d, s.dtype), s,
                      precision=jax.lax.Precision.HIGHEST)
