"""diffsynth: pure, synth-agnostic differentiable DSP building blocks in JAX.

Every function is a pure function of arrays (jit/vmap/grad safe), batch dims lead and
time is last, units are in the argument names (``freq_hz``, ``attack_s``). Synth
proxies (``proxies/``) compose these blocks; nothing here knows about a synth.

Modules: :mod:`~diffsynth.oscillators`, :mod:`~diffsynth.envelopes`,
:mod:`~diffsynth.modulation`, :mod:`~diffsynth.effects`, :mod:`~diffsynth.control`
(control-rate block grid, scan and float32-exactness utilities),
:mod:`~diffsynth.filters`, :mod:`~diffsynth.spectral`, :mod:`~diffsynth.losses`,
:mod:`~diffsynth.parallel` (a batch's rows over the local devices).

Importing the package applies :func:`diffsynth.runtime.configure_xla` (an XLA:CPU option that
compiles per-sample loops as one kernel, and one CPU device per core; output unchanged, a user's
own ``XLA_FLAGS`` setting of either wins; ``DIFFSYNTH_RUNTIME=0`` turns them off). It takes effect if no JAX computation ran
before the import. Submodules load on first use (``import diffsynth`` alone does not import JAX).
"""

import importlib as _importlib

from diffsynth import runtime as _runtime

_runtime.configure_xla(warn=False)

# Submodules and their public names load on first use (PEP 562), so that importing the package,
# e.g. for ``diffsynth.runtime.reexec_with_tunables`` in a CLI, does not import JAX.
_SUBMODULES = ("control", "effects", "envelopes", "filters", "losses", "modulation", "oscillators", "parallel",
               "runtime", "spectral")
_EXPORTS = {
    "control": ("block_lengths", "block_values_at", "blocked_prefix_scan", "hold_per_block", "interpolate_per_block",
                "n_blocks", "seconds_to_samples", "strict_divide", "strict_round"),
    "effects": ("freeverb", "freeverb_delay_lengths", "freeverb_mix_gains", "peak_limiter", "power_distortion"),
    "envelopes": ("adsr", "adsr_exponential", "sequential_float32_ramp"),
    "modulation": ("LFO_WAVEFORMS", "lfo_waveforms", "one_pole_coefficient", "one_pole_lowpass",
                   "parameter_smoother"),
    "oscillators": ("accumulate_phase_float32", "box_pulse", "hard_sync", "phase_from_frequency", "phase_increment",
                    "polyblep_pulse", "polyblep_saw", "sample_and_hold", "saw_triangle", "sine", "white_noise"),
    "filters": ("FILTER_KINDS", "BiquadCoefficients", "biquad", "biquad_blocks", "biquad_cascade",
                "biquad_coefficients", "biquad_coefficients_mixture", "biquad_reference", "biquad_scan"),
    "parallel": ("batch_parallel", "local_mesh"),
    "losses": ("batch_mean", "log_mel_l1", "log_spectral_distance", "mfcc_l1", "multi_resolution_stft_loss",
               "snr_db", "spectral_convergence", "STFTTarget", "precompute_target", "loss_against"),
    "spectral": ("dct_matrix", "log_mel_spectrogram", "magnitude_spectrogram", "mel_filterbank", "mel_spectrogram",
                 "mfcc", "power_spectrogram", "power_to_db", "safe_magnitude", "stft", "stft_frames_major"),
}
_OWNER = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(set(_SUBMODULES) | set(_OWNER))


def __getattr__(name: str):
    if name in _SUBMODULES:
        return _importlib.import_module(f"diffsynth.{name}")
    if name in _OWNER:
        value = getattr(_importlib.import_module(f"diffsynth.{_OWNER[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'diffsynth' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
