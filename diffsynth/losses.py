"""Audio losses and metrics: one module, used for training, fitting and evaluation.

Convention: every function takes audio ``pred`` / ``target`` (or ``reference`` /
``estimate``) of shape ``[..., n_samples]`` (broadcastable against each other) and
returns one value per example, shape ``[...]`` (the broadcast batch shape; ``()`` for
1-D inputs). Reduce with ``jnp.mean`` or wrap a function with :func:`batch_mean`.
Nothing here returns a different structure depending on a flag.

All losses have finite gradients also for silent (all-zero) inputs: magnitudes use
``sqrt(|X|^2 + eps)`` and logs see only ``eps``-floored arguments.
Spectral conventions (STFT, mel, dB, MFCC) are those of :mod:`diffsynth.spectral`,
i.e. librosa's.
"""

from __future__ import annotations

from typing import Callable, Sequence, Union

import jax
import jax.numpy as jnp

from . import spectral

__all__ = [
    "batch_mean",
    "multi_resolution_stft_loss",
    "log_mel_l1",
    "mfcc_l1",
    "log_spectral_distance",
    "spectral_convergence",
    "snr_db",
]


def batch_mean(fn: Callable[..., jax.Array]) -> Callable[..., jax.Array]:
    """Wraps a per-example loss/metric of this module into its scalar batch mean.

    Example: ``loss = batch_mean(multi_resolution_stft_loss)(pred, target)``.
    """

    def mean_fn(*args, **kwargs):
        return jnp.mean(fn(*args, **kwargs))

    mean_fn.__name__ = f"mean_{getattr(fn, '__name__', 'loss')}"
    mean_fn.__doc__ = f"Batch mean of :func:`{getattr(fn, '__name__', 'loss')}`."
    return mean_fn


def _check_pair(a: jax.Array, b: jax.Array, names=("pred", "target")) -> tuple[jax.Array, jax.Array]:
    a = jnp.asarray(a)
    b = jnp.asarray(b)
    if a.ndim < 1 or b.ndim < 1 or a.shape[-1] != b.shape[-1]:
        raise ValueError(
            f"{names[0]} and {names[1]} must be audio [..., n_samples] with the same "
            f"n_samples; got shapes {a.shape} and {b.shape}"
        )
    try:
        jnp.broadcast_shapes(a.shape[:-1], b.shape[:-1])
    except ValueError as err:
        raise ValueError(
            f"batch dims of {names[0]} {a.shape[:-1]} and {names[1]} {b.shape[:-1]} do not "
            "broadcast"
        ) from err
    dtype = jnp.result_type(a, b, jnp.float32)
    return a.astype(dtype), b.astype(dtype)


def _stft_power(x: jax.Array, n_fft: int, hop_length: int) -> jax.Array:
    """|STFT|^2 in the layout [..., n_frames, n_freq] (layout-free reductions only)."""
    return spectral.power_spectrogram(spectral.stft_frames_major(x, n_fft, hop_length))


def multi_resolution_stft_loss(
    pred: jax.Array,
    target: jax.Array,
    fft_sizes: Sequence[int] = (64, 128, 256, 512, 1024, 2048),
    hop_ratio: float = 0.25,
    linear_weight: float = 1.0,
    log_weight: float = 1.0,
    eps: float = 1e-7,
) -> jax.Array:
    """Multi-resolution STFT distance (linear + log magnitude L1), per example.

    For each FFT size ``N`` in ``fft_sizes`` (hop ``max(1, int(N * hop_ratio))``, Hann
    window, centred with zero padding, see :func:`diffsynth.spectral.stft`)::

        M_x   = sqrt(|STFT_N(x)|^2 + eps)                       # [..., N/2+1, frames]
        L_N   = linear_weight * mean_{f,t} |M_pred - M_target|
              + log_weight    * mean_{f,t} |log M_pred - log M_target|
        loss  = mean_N L_N

    Magnitudes are unnormalised (a full-scale sine peaks at about ``N / 4``); ``eps``
    floors the magnitude at ``sqrt(eps)`` (-70 dB re 1 for the default), which keeps
    the log and its gradient finite for silence.

    Args:
      pred: audio, shape ``[..., n_samples]``.
      target: audio, shape ``[..., n_samples]`` (batch dims broadcast with ``pred``).
      fft_sizes: FFT sizes (samples).
      hop_ratio: hop as a fraction of the FFT size.
      linear_weight: weight of the linear-magnitude term.
      log_weight: weight of the log-magnitude term.
      eps: added to ``|X|^2`` inside the square root (> 0).

    Returns:
      Loss per example, shape ``[...]``.
    """
    if eps <= 0:
        raise ValueError(f"eps must be > 0 (it keeps sqrt/log finite at silence); got {eps}")
    if len(fft_sizes) == 0:
        raise ValueError("fft_sizes must name at least one FFT size, e.g. (512, 1024, 2048)")
    pred, target = _check_pair(pred, target)
    total = 0.0
    for n_fft in fft_sizes:
        hop = max(1, int(n_fft * hop_ratio))
        p_pow = _stft_power(pred, n_fft, hop) + eps
        t_pow = _stft_power(target, n_fft, hop) + eps
        term = 0.0
        if linear_weight:
            term = term + linear_weight * jnp.mean(
                jnp.abs(jnp.sqrt(p_pow) - jnp.sqrt(t_pow)), axis=(-2, -1)
            )
        if log_weight:
            # log M = 0.5 log(|X|^2 + eps)
            term = term + log_weight * 0.5 * jnp.mean(
                jnp.abs(jnp.log(p_pow) - jnp.log(t_pow)), axis=(-2, -1)
            )
        total = total + term
    return total / len(fft_sizes)


def log_mel_l1(
    pred: jax.Array,
    target: jax.Array,
    sample_rate: float,
    n_fft: int = 2048,
    hop_length: int = 512,
    n_mels: int = 128,
    fmin: float = 0.0,
    fmax: float | None = None,
    amin: float = 1e-10,
    top_db: float | None = 80.0,
) -> jax.Array:
    """Mean absolute difference of log-mel spectrograms (dB), per example.

    ``mean_{m,t} |power_to_db(mel(pred)) - power_to_db(mel(target))|`` with librosa's
    defaults (power mel spectrogram, Slaney mel, ``ref=1``, ``amin=1e-10``,
    ``top_db=80`` relative to each signal's own maximum), i.e. the L1 distance between
    ``librosa.power_to_db(librosa.feature.melspectrogram(y=...))`` features.

    Args:
      pred, target: audio, shape ``[..., n_samples]``.
      sample_rate: sample rate (Hz).
      n_fft, hop_length, n_mels, fmin, fmax: mel spectrogram settings.
      amin, top_db: dB settings (see :func:`diffsynth.spectral.power_to_db`).

    Returns:
      dB per example, shape ``[...]``.
    """
    pred, target = _check_pair(pred, target)
    kw = dict(n_fft=n_fft, hop_length=hop_length, n_mels=n_mels, fmin=fmin, fmax=fmax,
              amin=amin, top_db=top_db)
    a = spectral.log_mel_spectrogram(pred, sample_rate, **kw)
    b = spectral.log_mel_spectrogram(target, sample_rate, **kw)
    return jnp.mean(jnp.abs(a - b), axis=(-2, -1))


def mfcc_l1(
    pred: jax.Array,
    target: jax.Array,
    sample_rate: float,
    n_mfcc: int = 20,
    n_fft: int = 2048,
    hop_length: int = 512,
    n_mels: int = 128,
    fmin: float = 0.0,
    fmax: float | None = None,
    amin: float = 1e-10,
    top_db: float | None = 80.0,
) -> jax.Array:
    """Mean absolute difference of MFCCs (``librosa.feature.mfcc`` conventions).

    Args:
      pred, target: audio, shape ``[..., n_samples]``.
      sample_rate: sample rate (Hz).
      n_mfcc: number of coefficients (librosa default 20; deepDIVA used 13).
      n_fft, hop_length, n_mels, fmin, fmax, amin, top_db: see
        :func:`diffsynth.spectral.mfcc`.

    Returns:
      Per example, shape ``[...]``.
    """
    pred, target = _check_pair(pred, target)
    kw = dict(n_mfcc=n_mfcc, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels, fmin=fmin,
              fmax=fmax, amin=amin, top_db=top_db)
    a = spectral.mfcc(pred, sample_rate, **kw)
    b = spectral.mfcc(target, sample_rate, **kw)
    return jnp.mean(jnp.abs(a - b), axis=(-2, -1))


def log_spectral_distance(
    pred: jax.Array,
    target: jax.Array,
    n_fft: int = 2048,
    hop_length: int = 512,
    eps: float = 1e-10,
) -> jax.Array:
    """Log-spectral distance (dB), per example.

    ``LSD = mean_t sqrt( mean_f (10 log10(P_pred + eps) - 10 log10(P_target + eps))^2 )``
    with ``P = |STFT|^2`` (Hann, centred). The inner square root is made gradient-safe
    (finite when both spectra are equal).

    Args:
      pred, target: audio, shape ``[..., n_samples]``.
      n_fft, hop_length: STFT settings (samples).
      eps: power floor (> 0).

    Returns:
      dB per example, shape ``[...]``.
    """
    if eps <= 0:
        raise ValueError(f"eps must be > 0; got {eps}")
    pred, target = _check_pair(pred, target)
    a = 10.0 * jnp.log10(_stft_power(pred, n_fft, hop_length) + eps)
    b = 10.0 * jnp.log10(_stft_power(target, n_fft, hop_length) + eps)
    per_frame = spectral.safe_magnitude(jnp.mean((a - b) ** 2, axis=-1))  # over freq
    return jnp.mean(per_frame, axis=-1)  # over frames


def spectral_convergence(
    pred: jax.Array,
    target: jax.Array,
    n_fft: int = 2048,
    hop_length: int = 512,
    eps: float = 1e-7,
) -> jax.Array:
    """Spectral convergence ``||M_target - M_pred||_F / ||M_target||_F``, per example.

    ``M = sqrt(|STFT|^2 + eps)`` (Hann, centred); Frobenius norms over (freq, frames).

    Args:
      pred, target: audio, shape ``[..., n_samples]``.
      n_fft, hop_length: STFT settings (samples).
      eps: added to ``|X|^2`` inside the square root (> 0).

    Returns:
      Ratio per example, shape ``[...]`` (0 = identical; 1 = as large as the target).
    """
    if eps <= 0:
        raise ValueError(f"eps must be > 0; got {eps}")
    pred, target = _check_pair(pred, target)
    a = jnp.sqrt(_stft_power(pred, n_fft, hop_length) + eps)
    b = jnp.sqrt(_stft_power(target, n_fft, hop_length) + eps)
    num = spectral.safe_magnitude(jnp.sum((b - a) ** 2, axis=(-2, -1)))
    den = jnp.sqrt(jnp.sum(b**2, axis=(-2, -1)))
    return num / den


def snr_db(reference: jax.Array, estimate: jax.Array, eps: float = 1e-20) -> jax.Array:
    """Signal-to-noise ratio of ``estimate`` against ``reference`` (dB), per example.

    ``10 log10((sum reference^2 + eps) / (sum (reference - estimate)^2 + eps))`` over the
    last axis (no scaling or alignment). Identical signals give
    ``10 log10(1 + sum reference^2 / eps)`` (large but finite).

    Args:
      reference: audio, shape ``[..., n_samples]``.
      estimate: audio, shape ``[..., n_samples]``.
      eps: energy floor (> 0).

    Returns:
      dB per example, shape ``[...]``.
    """
    if eps <= 0:
        raise ValueError(f"eps must be > 0; got {eps}")
    reference, estimate = _check_pair(reference, estimate, ("reference", "estimate"))
    signal = jnp.sum(reference**2, axis=-1) + eps
    noise = jnp.sum((reference - estimate) ** 2, axis=-1) + eps
    return 10.0 * (jnp.log10(signal) - jnp.log10(noise))
