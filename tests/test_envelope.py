"""estimate_hold: the note-off of real amsynth renders with known holds, and the fallbacks."""

from __future__ import annotations

import numpy as np
import pytest

from proxies.amsynth.spec import AMSYNTH
from proxies.notes import Note
from training.envelope import estimate_hold, rms_envelope

SR = 44100
TIME_PARAMS = ("amp_attack", "amp_decay", "amp_release", "filter_attack", "filter_decay", "filter_release")


def seconds_to_normalized(seconds: float) -> float:
    """amsynth's envelope time law: time = (2.5 n)^3 + 0.0005 s (proxies/amsynth/spec.py)."""
    return (seconds - 0.0005) ** (1 / 3) / 2.5


def preset(**values: float) -> np.ndarray:
    """The default preset with ``values`` (times in seconds, others normalized). master_vol 0.3
    keeps the output below amsynth's limiter, which would hold the level up after the note-off."""
    n = AMSYNTH.defaults_normalized.copy()
    n[AMSYNTH.index_of("master_vol")] = 0.3
    for name, v in values.items():
        n[AMSYNTH.index_of(name)] = seconds_to_normalized(v) if name in TIME_PARAMS else v
    return n


ORGAN = preset(amp_release=0.4)  # full sustain, 0.4 s linear release
ADSR = preset(amp_attack=0.05, amp_decay=0.3, amp_sustain=0.5, amp_release=0.3)
TREMOLO = preset(amp_release=0.3, lfo_freq=0.4, amp_mod_amount=0.8)  # 9 Hz LFO on the amp, depth 0.6


def render(normalized: np.ndarray, hold_s: float, tail_s: float = 1.0, note: int = 60) -> np.ndarray:
    from proxies.host import render as host_render

    return host_render("amsynth", normalized, notes=(Note(note, 100, 0.0, hold_s),), duration_s=hold_s + tail_s,
                       sample_rate=SR)


@pytest.mark.plugin
@pytest.mark.parametrize("hold_s", [0.5, 1.0, 2.0])
def test_note_off_of_a_held_organ_is_found_within_10_ms(amsynth_path, hold_s):
    e = estimate_hold(render(ORGAN, hold_s), SR)
    assert e.how == "release", e.message
    assert abs(e.onset_s + e.hold_s - hold_s) < 0.010, e
    # the 0.4 s linear release ends at hold + 0.4 s (-60 dB a frame or two before silence)
    assert abs(e.onset_s + e.sound_end_s - (hold_s + 0.4)) < 0.03, e


@pytest.mark.plugin
@pytest.mark.parametrize("hold_s, tolerance_s", [(0.5, 0.03), (1.0, 0.01), (2.0, 0.01)])
def test_note_off_after_attack_decay_to_half_sustain(amsynth_path, hold_s, tolerance_s):
    # the decay ends at 0.35 s: with a 0.5 s hold only 150 ms of sustain precede the note-off
    e = estimate_hold(render(ADSR, hold_s), SR)
    assert e.how == "release", e.message
    assert abs(e.onset_s + e.hold_s - hold_s) < tolerance_s, e


@pytest.mark.plugin
@pytest.mark.parametrize("note", [36, 84])
def test_note_off_at_low_and_high_notes(amsynth_path, note):
    e = estimate_hold(render(ORGAN, 1.0, note=note), SR)
    assert e.how == "release" and abs(e.onset_s + e.hold_s - 1.0) < 0.010, e


@pytest.mark.plugin
def test_note_off_under_a_deep_tremolo_within_50_ms(amsynth_path):
    e = estimate_hold(render(TREMOLO, 1.0), SR)
    assert e.how == "release", e.message
    assert abs(e.onset_s + e.hold_s - 1.0) < 0.05, e


@pytest.mark.plugin
def test_leading_silence_moves_the_onset_not_the_hold(amsynth_path):
    audio = render(ORGAN, 1.0)
    padded = np.pad(audio, ((0, 0), (int(0.25 * SR), 0)))
    a, b = estimate_hold(audio, SR), estimate_hold(padded, SR)
    assert b.onset_s == pytest.approx(a.onset_s + 0.25, abs=1e-4)
    assert b.hold_s == pytest.approx(a.hold_s, abs=0.002) and b.how == "release"


def test_pluck_has_no_note_off_and_holds_until_40_db_down():
    t = np.arange(3 * SR) / SR
    pluck = np.sin(2 * np.pi * 220 * t) * np.exp(-t / 0.3) * np.minimum(1.0, t / 0.002)
    e = estimate_hold(pluck, SR)
    assert e.how == "decays_from_attack", e
    assert "no note-off" in e.message
    assert e.hold_s == pytest.approx(0.3 * np.log(100), abs=0.03)  # exp(-t/0.3) is 40 dB down at 1.38 s
    assert e.sound_end_s == pytest.approx(0.3 * np.log(1000), abs=0.03)  # 60 dB down at 2.07 s


def test_a_note_still_held_at_the_end_is_held_to_the_end():
    t = np.arange(int(1.5 * SR)) / SR
    e = estimate_hold(np.stack([np.sin(2 * np.pi * 330 * t)] * 2) * np.minimum(1.0, t / 0.01), SR)
    assert e.how == "held_to_end" and e.hold_s == pytest.approx(1.5, abs=0.001), e


def test_silence_and_bad_shapes():
    assert estimate_hold(np.zeros((2, SR)), SR).how == "silent"
    with pytest.raises(ValueError, match="channels, samples"):
        estimate_hold(np.zeros((1, 2, SR)), SR)


def test_envelope_of_a_steady_low_tone_is_flat():
    t = np.arange(2 * SR) / SR
    amp, dt = rms_envelope(np.sin(2 * np.pi * 55.0 * t), SR)
    db = 20 * np.log10(amp[10:-10] / amp.max())
    assert dt == pytest.approx(0.01, abs=1e-4)
    assert db.max() - db.min() < 0.2  # Hann-weighted RMS: no ripple from the partial periods in a window


def test_whole_target_counts_the_note_off_from_where_the_sound_starts(tmp_path):
    """A slow (quartic) attack: the matched audio starts where the sound rises above -60 dB, the
    envelope's onset is later (-40 dB); the note-off and the judged length count from the former."""
    import soundfile as sf

    from training.config import DataConfig
    from training.targets import prepare_whole_target

    sr, attack_s, off_s, release_s = 16000, 0.8, 1.5, 0.1
    t = np.arange(int(2.2 * sr)) / sr
    env = np.where(t < attack_s, (t / attack_s) ** 4, 1.0)
    env = np.where(t >= off_s, np.clip(1.0 - (t - off_s) / release_s, 0.0, 1.0), env)
    silence = np.zeros(int(0.1 * sr))
    sf.write(tmp_path / "pad.wav", np.concatenate([silence, 0.5 * env * np.sin(2 * np.pi * 220.0 * t)]), sr,
             subtype="FLOAT")
    heard_from = attack_s * 1e-3 ** 0.25  # the sound starts at -60 dB re its peak
    tg = prepare_whole_target(tmp_path / "pad.wav", DataConfig(), 57, None, lambda m: None)
    assert tg.hold_s == pytest.approx(off_s - heard_from, abs=0.03), tg.hold_s  # 1.36 s (onset-based: 1.25 s)
    assert tg.duration_s >= off_s + release_s - heard_from
