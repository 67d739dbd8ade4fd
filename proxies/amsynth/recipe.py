"""amsynth's render recipe for the DawDreamer host: what makes its renders reproducible.

The determinism protocol (amsynth; measured, see ``shared/amsynth/README.md`` §3, §9.4, §10)
------------------------------------------------------------------------------------------
The README §10 protocol (warm-up render, ``load_graph``, kept render) leaves renders dependent on
what the same plugin instance rendered before: we measured max |diff| up to 0.47 between a preset
rendered fresh and the same preset rendered after another one. The causes, all in amsynth 1.13.2's
source, and what this module does about each:

1. **Smoothers stall history-dependently.** ``z += (x - z) * 0.005f`` (per-voice master volume,
   distortion crunch, reverb dry/wet) stops moving ~100 ulp short of its target, on the side it
   came from: a preset rendered after a louder one is 7e-6 away from the same preset rendered
   fresh. *Fix*: a **pre-roll** render with the notes held, ``master_vol = 0``, crunch at maximum
   and ``reverb_wet = 0`` drives every smoother far to one side, so the warm-up approaches each
   target from the same side and stalls at the same float.
2. **Frequency lerpers start from the previous block's target.** With LFO pitch modulation the
   oscillators' first block (and so the whole note's phase) depended on where the LFO was when
   the previous render stopped. *Fix*: the pre-roll runs with ``lfo_freq = 0``,
   ``freq_mod_amount = 0`` and ``portamento_time = 0``, so the warm-up starts from the plain note
   frequency and an LFO frequency of 0 whatever came before.
3. **The reverb's comb ``filterstore`` is never cleared** (``load_graph`` clears only the delay
   lines), and it leaks the previous render into the first ~100 samples of comb writes. *Fix*:
   after the warm-up, ``load_graph`` and a short **flush** render with ``reverb_damp = 0`` and no
   voice sounding: each comb's store then equals its (empty) delay line output, i.e. exactly 0.
4. **JUCE skips ``setParameter`` when the new value is within ~1 ulp of its cached one**, so the
   plugin would keep the old value. *Fix*: such near-equal values are sent after a far value.
5. **LFO polarity is sticky** (README §6.1): ``lfo_waveform`` is set to saw-down then saw-up
   (n = 1, 5/6) before the target values, so the triangle LFO always has polarity +1.
6. **The osc2 sync accumulator is never reset** (README §6.3): it runs on from one sync render to
   the next on the same voice, and no parameter can bring it back. *Fix*: a preset with sync
   active gets a **fresh plugin instance** whenever a voice it plays was already used by a sync
   render of the current instance (~0.1-0.3 s per such preset; :class:`RenderPool` forks
   instead, ~10-20 ms).

Per preset: ``prelude`` (5) -> values with pre-roll overrides -> pre-roll (4096 samples, notes
held) -> values with ``reverb_damp = 0`` -> warm-up (the real notes and duration) ->
``load_graph`` -> flush (512 samples, silent) -> target values -> ``load_graph`` -> kept render.
Measured (``tests/test_host.py`` and a wider check: 60 random presets with portamento and
keyboard modes, 40 factory presets, single notes, chords and staggered notes, 16 and 44.1 kHz):
renders are **bit-identical** whatever was rendered before and in whichever process. One known
residual: when every note sounds for less than ~2300 samples in all, the per-voice volume
smoother has not fully settled after the pre-roll (it left it at ~1e-9 of its old value), which
leaves differences of a few 1e-9. The protocol costs about 2x the CPU of one raw render
(``benchmarks/render.py``).

**Noise.** amsynth's oscillator noise / sample-and-hold and LFO noise / S&H draw from one
process-global LCG (seeded once when the ``.so`` is loaded) and S&H counters that persist in each
voice. Rendered in *this* process (:func:`render`), such presets are **not** reproducible: the
result depends on every noise sample drawn before in the process. :func:`is_reproducible` tells
callers which rows are (``~proxies.amsynth.spec.uses_noise``); compare those renders with
spectral or statistical measures, not sample by sample. :class:`RenderPool` in fork mode (Linux,
default) renders them in a forked child of a worker that never drew a noise sample, i.e. from
the load seed, so there they *are* reproducible and equal a fresh process's first render
(README §10: "fresh process with identical call history").
"""

from __future__ import annotations

import numpy as np

from proxies.amsynth.spec import AMSYNTH, uses_noise, uses_sync
from proxies.host import PluginInfo
from proxies.notes import Note

__all__ = ["AMSYNTH_PLUGIN", "read_preset"]

_I = AMSYNTH.index_of


def _amsynth_fresh_voices(normalized: np.ndarray, notes: tuple[Note, ...]) -> frozenset[int]:
    if not bool(uses_sync(normalized)):
        return frozenset()
    mode = int(AMSYNTH.category_of(np.asarray(normalized))[_I("keyboard_mode")])
    # poly: one VoiceBoard per note number; mono / legato: always voice 0 (README §4)
    return frozenset(n.pitch for n in notes) if mode == 0 else frozenset({0})


def read_preset(path: str, index: int | None = None) -> tuple[str, np.ndarray]:
    """(name, normalized [41] float64) of one preset of a bank, preset text or .fxp."""
    from proxies.amsynth.presets import read_preset_file

    preset = read_preset_file(path, index)
    return preset.name, np.asarray(preset.normalized, dtype=np.float64)


AMSYNTH_PLUGIN = PluginInfo(
    name="amsynth",
    default_path="/usr/lib/vst/amsynth_vst.so",
    spec=AMSYNTH,
    install_hint="sudo apt-get install amsynth (or: bash scripts/setup.sh)",
    prelude=((_I("lfo_waveform"), 1.0), (_I("lfo_waveform"), 5.0 / 6.0)),
    preroll_overrides={
        _I("master_vol"): 0.0,  # volume smoothers -> 0: the warm-up approaches from below
        _I("distortion_crunch"): 1.0,  # crunch smoother -> its lowest target (from above)
        _I("reverb_wet"): 0.0,  # dry smoother -> 1, wet smoothers -> 0
        _I("reverb_damp"): 0.0,
        _I("lfo_freq"): 0.0,  # LFO frequency lerpers end at 0 Hz
        _I("freq_mod_amount"): 0.0,  # oscillator lerpers end at the plain note frequency
        _I("portamento_time"): 0.0,  # no glide: mono voice 0 ends at the note frequency
    },
    flush_overrides={_I("reverb_damp"): 0.0},  # comb filterstore := delay output = 0
    fresh_voices=_amsynth_fresh_voices,
    uses_noise=uses_noise,
    read_preset=read_preset,
)
