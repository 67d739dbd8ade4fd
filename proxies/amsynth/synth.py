"""amsynth behind the synth seam: the one record the rest of the library knows it by.

Nothing here imports JAX or loads the plugin: the proxy is loaded by :func:`load_proxy` on
first use, the engine by ``SYNTH.open_engine``.
"""

from __future__ import annotations

import functools
import os

import numpy as np

from proxies.amsynth.recipe import AMSYNTH_PLUGIN, read_preset
from proxies.amsynth.spec import AMSYNTH, uses_noise
from proxies.host import open_engine
from proxies.synth import NoteConvention, PresetFormats, Proxy, Synth

__all__ = ["SYNTH", "load_proxy"]

#: amsynth parameters whose spectral-loss gradient (through the proxy, at a parameter-trained
#: model's predictions) points towards the target value for >= 60 % of the gradient mass. Pitch
#: and LFO-rate gradients point away (osc2_detune 9 %, lfo_freq 40 %), categorical ones are at
#: chance or below; those parameters learn from the parameter loss only.
SPECTRAL_PARAMS = ("amp_attack", "amp_decay", "amp_sustain", "amp_release", "filter_env_amount",
                   "filter_cutoff", "osc_mix_mode", "osc1_pulsewidth", "osc2_pulsewidth", "reverb_damp",
                   "reverb_width", "amp_mod_amount")


#: stage -> edits that remove it in the plugin and the proxy alike (the fidelity diagnosis):
#: reverb wet 0; crunch 0; master volume x0.2, below the limiter threshold (the distortion is
#: homogeneous, so only the limiter's action changes); filter bypassed; filter envelope amount
#: 0; LFO depths 0; sync off; osc1 only; osc2 only.
ABLATIONS = {
    "reverb": {"reverb_wet": 0.0},
    "distortion": {"distortion_crunch": 0.0},
    "limiter": {"master_vol": ("scale", 0.2)},
    "filter": {"filter_type": 1.0},
    "filter_envelope": {"filter_env_amount": 0.5},
    "lfo": {"freq_mod_amount": 0.0, "filter_mod_amount": 0.0, "amp_mod_amount": 0.0},
    "sync": {"osc2_sync": 0.0},
    "osc1_only": {"osc_mix": 0.0, "osc_mix_mode": 0.0},
    "osc2_only": {"osc_mix": 1.0, "osc_mix_mode": 0.0},
}


def _read_all(path: str) -> list[tuple[str, np.ndarray]]:
    from proxies.amsynth.presets import BANK_HEADER, read_bank, read_preset_file

    with open(path, "rb") as f:
        is_bank = f.read(len(BANK_HEADER)) == BANK_HEADER
    presets = read_bank(path) if is_bank else [read_preset_file(path)]
    return [(p.name, np.asarray(p.normalized, dtype=np.float64)) for p in presets]


def _write(path: str, name: str, normalized: np.ndarray) -> list[str]:
    """PATH.amSynth (preset text) and PATH.fxp (VST2 FxCk), each atomically."""
    from proxies.amsynth.presets import Preset, write_fxp_params, write_preset_text

    preset = Preset.from_normalized(name, np.asarray(normalized, dtype=np.float64))
    fxp = os.path.splitext(os.fspath(path))[0] + ".fxp"
    write_preset_text(path, preset)
    write_fxp_params(fxp, preset)
    return [os.fspath(path), fxp]


def _corpus() -> tuple[list[str], np.ndarray]:
    from proxies.amsynth.presets import load_factory_banks

    fp = load_factory_banks()
    return list(fp.names), np.asarray(fp.normalized, dtype=np.float64)


def _reproducible(normalized) -> np.ndarray:
    return ~np.asarray(uses_noise(np.asarray(normalized, dtype=np.float64)), dtype=bool)


@functools.lru_cache(maxsize=1)
def load_proxy() -> Proxy:
    """amsynth's JAX proxy (imports JAX): calibration (:mod:`proxies.amsynth.calibration`) and
    the pure render (:mod:`proxies.amsynth.proxy`)."""
    from proxies.amsynth import calibration as cal

    return Proxy(to_controls=cal.to_proxy, render=cal.render_controls, relaxed=cal.RELAXED_SIZES,
                 one_hot=cal.one_hot_probs, from_controls=cal.from_proxy)


SYNTH = Synth(
    name="amsynth",
    spec=AMSYNTH,
    channels=2,
    open_engine=functools.partial(open_engine, AMSYNTH_PLUGIN),
    presets=PresetFormats(
        suffixes=(".amsynth", ".bank", ".fxp"),
        read=read_preset,
        read_all=_read_all,
        write=_write,
        write_suffix=".amSynth",
        corpus=_corpus,
        error=ValueError,  # PresetError is a ValueError
    ),
    notes=NoteConvention(note_off_quantum=1, note_off_rounding="floor"),
    proxy=load_proxy,
    reproducible=_reproducible,
    spectral_params=SPECTRAL_PARAMS,
    description="amsynth 1.13 (Debian amsynth, VST2 through DawDreamer): 41 parameters, 3482 factory presets",
    install_hint="sudo apt-get install amsynth (or: bash scripts/setup.sh)",
    plugin=AMSYNTH_PLUGIN,
    ablations=ABLATIONS,
)
