"""Shared pieces of the gradient-vs-finite-difference tests."""

from __future__ import annotations

import jax.numpy as jnp

from diffsynth import spectral


def spectral_l2(x, y):
    """Smooth spectral distance (L2 of STFT magnitudes at 256 and 1024 points): an L1 one has
    kinks that keep finite differences from converging."""
    total = 0.0
    for n_fft in (256, 1024):
        mx = jnp.sqrt(spectral.power_spectrogram(spectral.stft(x, n_fft, n_fft // 4)) + 1e-6)
        my = jnp.sqrt(spectral.power_spectrogram(spectral.stft(y, n_fft, n_fft // 4)) + 1e-6)
        total = total + jnp.mean((mx - my) ** 2)
    return total
