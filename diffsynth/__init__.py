"""diffsynth: pure, synth-agnostic differentiable DSP building blocks in JAX.

Every function is a pure function of arrays (jit/vmap/grad safe), batch dims lead and
time is last, units are in the argument names (``freq_hz``, ``attack_s``). Synth
proxies (``proxies/``) compose these blocks; nothing here knows about a synth.

Modules: :mod:`~diffsynth.oscillators`, :mod:`~diffsynth.envelopes`,
:mod:`~diffsynth.modulation`, :mod:`~diffsynth.effects`, :mod:`~diffsynth.control`
(control-rate block grid, scan and float32-exactness utilities),
:mod:`~diffsynth.filters`, :mod:`~diffsynth.spectral`, :mod:`~diffsynth.losses`.
"""

from diffsynth import control, effects, envelopes, modulation, oscillators  # noqa: F401
from diffsynth.control import (  # noqa: F401
    block_lengths, block_values_at, blocked_prefix_scan, hold_per_block, interpolate_per_block, n_blocks,
    seconds_to_samples, strict_divide, strict_round)
from diffsynth.effects import (  # noqa: F401
    freeverb, freeverb_delay_lengths, freeverb_mix_gains, peak_limiter, power_distortion)
from diffsynth.envelopes import adsr, adsr_exponential, sequential_float32_ramp  # noqa: F401
from diffsynth.modulation import (  # noqa: F401
    LFO_WAVEFORMS, lfo_waveforms, one_pole_coefficient, one_pole_lowpass, parameter_smoother)
from diffsynth.oscillators import (  # noqa: F401
    accumulate_phase_float32, box_pulse, hard_sync, phase_from_frequency, phase_increment, polyblep_pulse,
    polyblep_saw, sample_and_hold, saw_triangle, sine, white_noise)
from diffsynth import filters, losses, spectral  # noqa: F401,E402
from diffsynth.filters import (  # noqa: F401,E402
    FILTER_KINDS, BiquadCoefficients, biquad, biquad_blocks, biquad_cascade, biquad_coefficients,
    biquad_coefficients_mixture, biquad_reference, biquad_scan)
from diffsynth.losses import (  # noqa: F401,E402
    batch_mean, log_mel_l1, log_spectral_distance, mfcc_l1, multi_resolution_stft_loss, snr_db,
    spectral_convergence)
from diffsynth.spectral import (  # noqa: F401,E402
    dct_matrix, log_mel_spectrogram, magnitude_spectrogram, mel_filterbank, mel_spectrogram, mfcc,
    power_spectrogram, power_to_db, safe_magnitude, stft, stft_frames_major)
