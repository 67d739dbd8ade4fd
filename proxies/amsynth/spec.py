"""amsynth 1.13's 41 parameters, declared once (source: ``shared/amsynth/README.md`` §2.2).

Control values (``SynthSpec.internal_to_control``) equal the plugin's own parameter text in all
41 x 41 normalized steps. Portamento and the keyboard modes are fixed at their defaults in the
sampling prior: the proxy renders one note per sound, where they do nothing audible.
"""

from __future__ import annotations

from proxies.params import ParamSpec, SynthSpec

OSC_WAVEFORMS = ("sine", "pulse", "saw", "noise", "sample_hold")
LFO_WAVEFORMS = ("sine", "square", "triangle", "noise", "sample_hold", "saw_up", "saw_down")
FILTER_TYPES = ("lowpass", "highpass", "bandpass", "notch", "bypass")
FILTER_SLOPES = ("12dB", "24dB")
OSC2_RANGES = ("-3", "-2", "-1", "0", "+1", "+2", "+3", "+4")
OSC2_PITCHES = tuple(f"{s:+d}" for s in range(-12, 13))
FREQ_MOD_TARGETS = ("osc1+osc2", "osc1", "osc2")
KEYBOARD_MODES = ("poly", "mono", "legato")
OFF_ON = ("off", "on")

_TIME = dict(maximum=2.5, law="power", base=3.0, offset=0.0005, unit="s")


def _time(name: str, index: int, what: str) -> ParamSpec:
    return ParamSpec(name, index, 0.0, description=f"{what} time (2.5 n)^3 + 0.0005 s, linear segment", **_TIME)


AMSYNTH = SynthSpec(
    "amsynth",
    (
        _time("amp_attack", 0, "amp envelope attack"),
        _time("amp_decay", 1, "amp envelope decay"),
        ParamSpec("amp_sustain", 2, 0.0, 1.0, default=1.0, description="amp envelope sustain level (linear)"),
        _time("amp_release", 3, "amp envelope release"),
        ParamSpec("osc1_waveform", 4, 0.0, 4.0, 1.0, default=2.0, choices=OSC_WAVEFORMS,
                  description="oscillator 1 waveform"),
        _time("filter_attack", 5, "filter envelope attack"),
        _time("filter_decay", 6, "filter envelope decay"),
        ParamSpec("filter_sustain", 7, 0.0, 1.0, default=1.0, description="filter envelope sustain level"),
        _time("filter_release", 8, "filter envelope release"),
        ParamSpec("filter_resonance", 9, 0.0, 0.97,
                  description="resonance res; 1/Q = max(0.001, 2(1 - res)), Q in [0.5, 16.7]"),
        ParamSpec("filter_env_amount", 10, -16.0, 16.0,
                  description="filter envelope amount E: +E x note freq (E>0) or x(1 + E/16) of cutoff (E<0)"),
        ParamSpec("filter_cutoff", 11, -0.5, 1.5, law="exponential", base=16.0, default=1.5, unit="x",
                  description="cutoff multiplier 16^v of the key-track base frequency"),
        ParamSpec("osc2_detune", 12, -1.0, 1.0, law="exponential", base=1.25, unit="x",
                  description="osc2 frequency factor 1.25^v (+-386 cents)"),
        ParamSpec("osc2_waveform", 13, 0.0, 4.0, 1.0, default=2.0, choices=OSC_WAVEFORMS,
                  description="oscillator 2 waveform"),
        ParamSpec("master_vol", 14, 0.0, 1.0, law="power", base=2.0, default=0.67, unit="gain",
                  description="master volume, linear gain v^2"),
        ParamSpec("lfo_freq", 15, 0.0, 7.5, law="power", base=2.0, unit="Hz", description="LFO frequency v^2 Hz"),
        ParamSpec("lfo_waveform", 16, 0.0, 6.0, 1.0, choices=LFO_WAVEFORMS, description="LFO waveform"),
        ParamSpec("osc2_range", 17, -3.0, 4.0, 1.0, law="exponential", base=2.0, unit="x", choices=OSC2_RANGES,
                  description="osc2 octave factor 2^v"),
        ParamSpec("osc_mix", 18, -1.0, 1.0, description="oscillator mix m: osc1 (1-m)/2, osc2 (1+m)/2"),
        ParamSpec("freq_mod_amount", 19, 0.0, 1.25992105, law="power", base=3.0, offset=-1.0,
                  description="LFO -> pitch; depth a = cv/2 + 0.5 = n^3; f *= 1 + a lfo"),
        ParamSpec("filter_mod_amount", 20, -1.0, 1.0, default=-1.0,
                  description="LFO -> cutoff; depth a = (cv+1)/2; cutoff *= 1 - a(1-lfo)/2"),
        ParamSpec("amp_mod_amount", 21, -1.0, 1.0, default=-1.0,
                  description="LFO -> amplitude; depth a = (cv+1)/2; amp *= 1 - a(1-lfo)/2"),
        ParamSpec("osc_mix_mode", 22, 0.0, 1.0, description="ring modulation amount r (crossfade)"),
        ParamSpec("osc1_pulsewidth", 23, 0.0, 1.0, default=1.0, description="osc1 pulse duty / saw-triangle shape"),
        ParamSpec("osc2_pulsewidth", 24, 0.0, 1.0, default=1.0, description="osc2 pulse duty / saw-triangle shape"),
        ParamSpec("reverb_roomsize", 25, 0.0, 1.0, description="reverb comb feedback 0.7 + 0.28 v"),
        ParamSpec("reverb_damp", 26, 0.0, 1.0, description="reverb comb damping 0.4 v"),
        ParamSpec("reverb_wet", 27, 0.0, 1.0, description="reverb wet gain (dry path gain 2 - v)"),
        ParamSpec("reverb_width", 28, 0.0, 1.0, default=1.0, description="reverb stereo width"),
        ParamSpec("distortion_crunch", 29, 0.0, 0.9, description="distortion; exponent c = 1 - v"),
        ParamSpec("osc2_sync", 30, 0.0, 1.0, 1.0, choices=OFF_ON,
                  description="hard sync of osc2 to osc1 (only with osc1 sine or saw)"),
        ParamSpec("portamento_time", 31, 0.0, 1.0, unit="s", prior="fixed",
                  description="glide time, linear in Hz (not modelled: one note per sound)"),
        ParamSpec("keyboard_mode", 32, 0.0, 2.0, 1.0, choices=KEYBOARD_MODES, prior="fixed",
                  description="poly / mono / legato (not modelled: one note per sound)"),
        ParamSpec("osc2_pitch", 33, -12.0, 12.0, 1.0, choices=OSC2_PITCHES, unit="semitones",
                  description="osc2 transpose in semitones"),
        ParamSpec("filter_type", 34, 0.0, 4.0, 1.0, choices=FILTER_TYPES, description="filter type"),
        ParamSpec("filter_slope", 35, 0.0, 1.0, 1.0, default=1.0, choices=FILTER_SLOPES,
                  description="12 dB (one biquad) or 24 dB (two identical biquads)"),
        ParamSpec("freq_mod_osc", 36, 0.0, 2.0, 1.0, choices=FREQ_MOD_TARGETS,
                  description="oscillators the LFO pitch modulation reaches"),
        ParamSpec("filter_kbd_track", 37, 0.0, 1.0, default=1.0,
                  description="key tracking blend k: base = (1-k) 261.626 Hz + k f_note"),
        ParamSpec("filter_vel_sens", 38, 0.0, 1.0, default=1.0, description="velocity -> cutoff blend"),
        ParamSpec("amp_vel_sens", 39, 0.0, 1.0, default=1.0, description="velocity -> amplitude blend"),
        ParamSpec("portamento_mode", 40, 0.0, 1.0, prior="fixed",
                  description="glide always (v < 1) or legato only (v == 1 exactly; a plugin bug)"),
    ),
)

#: Parameters whose waveform choices make a render depend on the plugin's global noise RNG.
NOISE_OSC_CHOICES = ("noise", "sample_hold")


def uses_noise(normalized) -> "object":
    """Boolean ``[...]``: presets with an oscillator or LFO noise / sample-and-hold waveform.

    Such renders depend on the plugin's process-global random generator, so they are not
    reproducible sample for sample (see the determinism protocol in ``proxies.host``).
    """
    import numpy as np

    cat = AMSYNTH.category_of(np.asarray(normalized))
    osc = lambda i: np.isin(cat[..., i], [OSC_WAVEFORMS.index(c) for c in NOISE_OSC_CHOICES])
    lfo = np.isin(cat[..., AMSYNTH.index_of("lfo_waveform")],
                  [LFO_WAVEFORMS.index("noise"), LFO_WAVEFORMS.index("sample_hold")])
    return osc(AMSYNTH.index_of("osc1_waveform")) | osc(AMSYNTH.index_of("osc2_waveform")) | lfo


def uses_sync(normalized) -> "object":
    """Boolean ``[...]``: presets where osc2 hard sync is active (osc1 sine or saw)."""
    import numpy as np

    cat = AMSYNTH.category_of(np.asarray(normalized))
    osc1 = cat[..., AMSYNTH.index_of("osc1_waveform")]
    return (cat[..., AMSYNTH.index_of("osc2_sync")] == 1) & np.isin(
        osc1, [OSC_WAVEFORMS.index("sine"), OSC_WAVEFORMS.index("saw")]
    )
