"""Match a target sound with a preset for the real amsynth plugin.

    python -m training.match TARGET.wav --run runs/amsynth --out PATCH.amSynth
        [--note auto|MIDI] [--refine-steps N] [--search-renders M]

1. Reads the target (wav / flac / ogg / aiff / mp3: whatever libsndfile decodes; any sample
   rate, mono or stereo), resamples it to the run's rate, drops leading silence and trims or
   pads it to the run's window, saying what it did.
2. Finds the note (``--note auto``: median pYIN f0 -> nearest MIDI note; falls back to the
   run's training note when no stable pitch is found). The model was trained on one note, so it
   hears the target transposed to that note; everything else plays the target's own note.
3. Predicts a preset, re-renders it through the real plugin and scores it.
4. ``--refine-steps N``: N steps of gradient descent on the multi-resolution STFT distance
   through the differentiable proxy; a few snapshots are re-rendered through the plugin.
5. ``--search-renders M``: CMA-ES through the real plugin from the best preset so far, M renders.
6. Keeps whichever candidate scores best on the **real plugin's re-render** (so a stage never
   makes the result worse; candidates more than ``QUIET_DB`` = 20 dB quieter than the target are
   never kept, since the distance alone prefers silence to a wrong sound for short sounds) and
   writes:

   ``PATCH.amSynth``  the preset (amsynth preset text; load it in the plugin)
   ``PATCH.fxp``      the same preset as a VST2 program (41 normalized parameters)
   ``PATCH.wav``      the plugin's render of the written preset (32-bit float)
   ``PATCH.png``      log-mel spectrograms: target / proxy / plugin
   ``PATCH.json``     the distances of every stage, the note and what was done to the target

Distances: ``mss`` (multi-resolution STFT, FFT 64..2048, linear + log magnitude), log-mel L1
(dB), MFCC L1, all against the conditioned target.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".aif", ".aiff", ".mp3", ".au", ".caf", ".w64")
MAX_READ_S = 60.0  # longer files: only the first minute is read
SILENCE_PEAK = 1e-4  # -80 dBFS
LEAD_SILENCE_DB = -60.0  # leading samples quieter than this (re peak) are dropped
MAX_TRANSPOSE = 36  # semitones the model input may be shifted before we refuse
#: refinement and search keep no candidate whose plugin render is more than this many dB (RMS)
#: quieter than the target: the distance alone prefers silence to a wrong sound for short sounds
QUIET_DB = 20.0


class MatchError(ValueError):
    """A bad target file or option: the message says what was expected, what came, and the fix."""


def _err(what: str, expected: str, got: Any, fix: str) -> MatchError:
    return MatchError(f"{what}: expected {expected}, got {got}; fix: {fix}")


# ------------------------------------------------------------------------------ target audio
@dataclass
class Target:
    """A target conditioned for a run.

    Attributes:
        audio: [2, n_samples] float32 at the run's sample rate: what every distance compares to.
        model_input: [2, n_samples] float32, ``audio`` transposed to the run's training note
            (identical to ``audio`` when the notes agree): what the encoder hears.
        note: MIDI note the plugin and the proxy play.
        note_source: ``given`` (``--note``), ``estimated`` (pYIN) or ``fallback`` (no pitch found).
        f0_hz: median pYIN f0 (None when not estimated or unvoiced).
        messages: what was done to the file, for the user.
        source: file path, sample rate, channels and duration of the original.
    """

    audio: np.ndarray
    model_input: np.ndarray
    note: int
    note_source: str
    f0_hz: float | None
    messages: list[str] = field(default_factory=list)
    source: dict[str, Any] = field(default_factory=dict)


def read_audio(path: str | os.PathLike) -> tuple[np.ndarray, int, dict[str, Any]]:
    """(audio [channels, T] float64, sample rate, info) of an audio file; :class:`MatchError`
    for a missing, unreadable, empty, non-finite or silent file. Reads at most ``MAX_READ_S``."""
    import soundfile as sf

    p = Path(path)
    if not p.exists():
        raise _err("target", "an audio file (wav, flac, ogg, ...)", f"{str(p)!r}, which does not exist",
                   "check the path")
    if not p.is_file():
        raise _err("target", "an audio file", f"{str(p)!r}, which is a directory", "give one file")
    try:
        info = sf.info(str(p))
        frames = min(int(info.frames), int(MAX_READ_S * info.samplerate)) if info.frames > 0 else -1
        data, sr = sf.read(str(p), frames=frames, dtype="float64", always_2d=True)
    except Exception as e:  # libsndfile's errors are RuntimeError / LibsndfileError / TypeError
        raise _err("target", "an audio file libsndfile can decode (wav, flac, ogg, aiff, mp3)",
                   f"{str(p)!r} ({type(e).__name__}: {str(e).strip() or 'unreadable'})",
                   "convert it, e.g. `ffmpeg -i in.m4a out.wav`") from None
    audio = np.asarray(data, dtype=np.float64).T
    meta = {"path": str(p), "sample_rate": int(sr), "channels": int(audio.shape[0]),
            "seconds": float(info.frames) / sr if info.frames > 0 else audio.shape[1] / sr,
            "format": f"{info.format}/{info.subtype}"}
    if audio.shape[1] == 0:
        raise _err("target", "audio with at least one sample", f"an empty file {str(p)!r}",
                   "record or export the sound again")
    if not np.all(np.isfinite(audio)):
        bad = int((~np.isfinite(audio)).sum())
        raise _err("target", "finite samples", f"{bad} NaN/inf sample(s) in {str(p)!r}",
                   "re-export the file (a float wav with NaN comes from a broken render)")
    peak = float(np.max(np.abs(audio)))
    if peak < SILENCE_PEAK:
        db = 20 * math.log10(peak) if peak > 0 else -math.inf
        raise _err("target", f"a sound (peak above {20 * math.log10(SILENCE_PEAK):.0f} dBFS)",
                   f"silence (peak {db:.1f} dBFS) in {str(p)!r}", "give a file that contains the sound")
    return audio, int(sr), meta


def condition_audio(audio: np.ndarray, sample_rate: int, run_rate: int, n_samples: int,
                    say: Callable[[str], None], channels: int = 2) -> np.ndarray:
    """Audio [C, T] at ``sample_rate`` -> [channels, n_samples] float32 at ``run_rate`` (the synth's
    channels): channels matched, resampled, leading silence dropped, trimmed or zero-padded.
    ``say`` hears every step."""
    import librosa

    c = audio.shape[0]
    if c != channels:
        if c == 1:
            say(f"mono target: each of the synth's {channels} channels is compared with it")
        elif channels == 1:
            say(f"{c}-channel target mixed down to mono (the synth is mono)")
        else:
            say(f"{c}-channel target mixed down to mono (used for each of the synth's {channels} channels)")
        audio = np.repeat(audio.mean(axis=0, keepdims=True), channels, axis=0)
    if sample_rate != run_rate:
        audio = librosa.resample(audio, orig_sr=sample_rate, target_sr=run_rate, res_type="soxr_hq", axis=-1)
        say(f"resampled from {sample_rate} Hz to the run's {run_rate} Hz")
    peak = float(np.max(np.abs(audio)))
    loud = np.flatnonzero(np.max(np.abs(audio), axis=0) > peak * 10 ** (LEAD_SILENCE_DB / 20))
    start = int(loud[0]) if len(loud) else 0
    if start > 0:
        audio = audio[:, start:]
        if start / run_rate >= 0.001:
            say(f"dropped {start / run_rate * 1000:.0f} ms of leading silence (below {LEAD_SILENCE_DB:.0f} dB re "
                "peak): the plugin's note starts at sample 0")
    t = audio.shape[1]
    if t > n_samples:
        say(f"trimmed from {t / run_rate:.3f} s to the model's window of {n_samples / run_rate:.3f} s "
            "(only the start of the sound is matched)")
        audio = audio[:, :n_samples]
    elif t < n_samples:
        say(f"padded with silence from {t / run_rate:.3f} s to the model's window of {n_samples / run_rate:.3f} s")
        audio = np.pad(audio, ((0, 0), (0, n_samples - t)))
    return np.ascontiguousarray(audio, dtype=np.float32)


def estimate_note(audio: np.ndarray, sample_rate: int) -> tuple[int | None, float | None, float]:
    """(nearest MIDI note, median f0 in Hz, voiced fraction) of audio [2, T] by pYIN over C1..C8.

    The pitch counts as found when at least a quarter of the frames (and 3) are voiced with a
    voicing probability of 0.5 or more and their f0 agree (median absolute deviation under a
    semitone); otherwise (None, None, fraction): noise, drums and chords have no single note."""
    import librosa

    mono = np.asarray(audio, np.float64).mean(axis=0)
    frame = 2048 if sample_rate >= 16000 else 1024
    f0, voiced, prob = librosa.pyin(mono, fmin=librosa.note_to_hz("C1"), fmax=min(librosa.note_to_hz("C8"),
                                 sample_rate / 4), sr=sample_rate, frame_length=frame)
    good = voiced & np.isfinite(f0) & (prob >= 0.5)
    fraction = float(good.mean()) if len(good) else 0.0
    if good.sum() < 3 or fraction < 0.25:
        return None, None, fraction
    midi = librosa.hz_to_midi(f0[good])
    if float(np.median(np.abs(midi - np.median(midi)))) >= 1.0:
        return None, None, fraction
    hz = float(np.median(f0[good]))
    return int(np.clip(round(float(librosa.hz_to_midi(hz))), 0, 127)), hz, fraction


def prepare_target(path: str | os.PathLike, data: Any, note: int | str = "auto",
                   say: Callable[[str], None] = print) -> Target:
    """Read and condition a target for a run whose data config is ``data`` (``--note``: ``auto``
    or a MIDI note)."""
    import librosa

    raw, sr, meta = read_audio(path)
    messages: list[str] = []

    def tell(m: str) -> None:
        messages.append(m)
        say(m)

    from proxies.synth import get_synth

    channels = get_synth(data.synth, data.spec or None).channels
    audio = condition_audio(raw, sr, data.sample_rate, data.n_samples, tell, channels)
    if float(np.max(np.abs(audio))) < SILENCE_PEAK:
        raise _err("target", "a sound inside the matched window", "silence there", "trim the file to the sound")
    f0 = None
    if note == "auto":
        est, f0, frac = estimate_note(audio, data.sample_rate)
        if est is None:
            midi, source = int(data.note), "fallback"
            tell(f"no stable pitch found (pYIN voiced in {frac:.0%} of frames): playing the run's training note "
                 f"{midi}; pass --note MIDI to choose one")
        else:
            midi, source = est, "estimated"
            tell(f"estimated note {midi} ({librosa.midi_to_note(midi)}, median f0 {f0:.1f} Hz, voiced in "
                 f"{frac:.0%} of frames)")
    else:
        midi, source = int(note), "given"
    shift = int(data.note) - midi
    if abs(shift) > MAX_TRANSPOSE:
        raise _err("note", f"within {MAX_TRANSPOSE} semitones of the run's training note {data.note}", midi,
                   "pass --note closer to it, or train a run on a nearer note")
    if shift:
        model_input = np.stack([librosa.effects.pitch_shift(ch, sr=data.sample_rate, n_steps=float(shift))
                                for ch in audio.astype(np.float64)]).astype(np.float32)
        tell(f"the model hears the target transposed by {shift:+d} semitones to its training note {data.note}; "
             f"the plugin plays note {midi}")
    else:
        model_input = audio
    return Target(audio, model_input, midi, source, f0, messages, meta)


# ------------------------------------------------------------------------------ options
@dataclass(frozen=True)
class Options:
    target: Path
    run: Path
    out: Path
    note: int | str
    refine_steps: int
    search_renders: int
    refine_lr: float
    snapshots: int
    workers: int | None
    seed: int
    name: str
    which: str
    preset_files: list[str] = field(default_factory=list)  # what the synth's preset writer wrote


def _int_option(flag: str, text: str, lo: int, hi: int | None, fix: str) -> int:
    try:
        v = int(str(text).strip())
    except ValueError:
        v = None
    if v is None or v < lo or (hi is not None and v > hi):
        rng = f"an integer >= {lo}" if hi is None else f"an integer in {lo}..{hi}"
        raise _err(flag, rng, repr(text), fix)
    return v


def check_run_dir(run: str | os.PathLike, which: str = "best") -> Path:
    """The run directory, checked without loading JAX: config.json and a checkpoint exist."""
    from training.config import ConfigError, from_dict

    p = Path(run)
    hint = "train one with `python -m training.fit --config configs/amsynth.toml` or pass --run runs/<name>"
    if not p.is_dir():
        raise _err("--run", "a run directory written by training.fit (runs/<name>/)",
                   f"{str(p)!r}, which does not exist" if not p.exists() else f"{str(p)!r}, not a directory", hint)
    cfg = p / "config.json"
    if not cfg.is_file():
        raise _err("--run", "a run directory holding config.json", f"{str(p)!r} without it", hint)
    try:
        from_dict(json.loads(cfg.read_text()))
    except (ValueError, ConfigError) as e:
        raise _err("--run", "a readable config.json", f"{cfg}: {e}", "retrain the run, or fix the file") from None
    ck = p / "checkpoints" / which
    if not ck.is_dir() or not any(ck.iterdir()):
        other = "latest" if which == "best" else "best"
        raise _err("--run", f"a checkpoint in {ck}", "none", f"train longer, or pass --checkpoint {other}")
    return p


def parse_options(argv: Sequence[str] | None = None) -> Options:
    """Parse and check every option and the target's path before any heavy work."""
    p = argparse.ArgumentParser(prog="python -m training.match", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target", help="audio file to match (wav, flac, ogg, aiff, mp3; any rate, mono or stereo)")
    p.add_argument("--run", required=True, help="trained run directory (runs/<name>)")
    p.add_argument("--out", required=True, help="preset to write, PATCH.amSynth (.fxp/.wav/.png/.json beside it)")
    p.add_argument("--note", default="auto", help="MIDI note 0..127 the sound plays, or auto (pYIN; default)")
    p.add_argument("--refine-steps", default="0", help="gradient steps through the proxy (default 0)")
    p.add_argument("--search-renders", default="0", help="CMA-ES plugin renders after that (default 0)")
    p.add_argument("--refine-lr", default="0.3", help="Adam learning rate of the refinement (default 0.3)")
    p.add_argument("--snapshots", default="6", help="refinement snapshots re-rendered by the plugin (default 6)")
    p.add_argument("--workers", default=None, help="plugin render processes (default: the run's data.workers)")
    p.add_argument("--seed", default="0", help="seed of the search and the proxy's noise (default 0)")
    p.add_argument("--name", default=None, help="preset name (default: the target file's name)")
    p.add_argument("--checkpoint", default="best", choices=("best", "latest"), help="which checkpoint (best)")
    a = p.parse_args(argv)

    target = Path(a.target)
    if not target.exists():
        raise _err("TARGET", "an audio file", f"{a.target!r}, which does not exist", "check the path")
    if target.is_dir():
        raise _err("TARGET", "an audio file", f"{a.target!r}, a directory",
                   "give one file (python -m training.evaluate --targets DIR scores a folder)")
    run = check_run_dir(a.run, a.checkpoint)
    suffix = run_synth(run).presets.write_suffix
    out = Path(a.out)
    if out.suffix.lower() != suffix.lower():
        raise _err("--out", f"a file name ending in {suffix} ({run_synth(run).name}'s preset file)", repr(a.out),
                   f"e.g. --out {out.with_suffix(suffix)}")
    if out.is_dir():
        raise _err("--out", "a file name", f"{a.out!r}, a directory", f"e.g. --out {out / ('patch' + suffix)}")
    note: int | str
    if str(a.note).strip().lower() == "auto":
        note = "auto"
    else:
        note = _int_option("--note", a.note, 0, 127, "give a MIDI note number (60 = middle C) or auto")
    steps = _int_option("--refine-steps", a.refine_steps, 0, None, "0 skips refinement; try 50..200")
    renders = _int_option("--search-renders", a.search_renders, 0, None, "0 skips the search; try 100..500")
    snapshots = _int_option("--snapshots", a.snapshots, 1, 64, "try 4")
    seed = _int_option("--seed", a.seed, 0, None, "any integer >= 0")
    workers = None if a.workers is None else _int_option("--workers", a.workers, 1, 256, "try 2")
    try:
        lr = float(a.refine_lr)
    except ValueError:
        lr = float("nan")
    if not (math.isfinite(lr) and 0 < lr <= 10):
        raise _err("--refine-lr", "a learning rate in (0, 10]", repr(a.refine_lr), "try 0.3")
    name = a.name if a.name is not None else out.stem
    if not name.strip() or any(c in name for c in "\n\r\0"):
        raise _err("--name", "a one-line, non-empty preset name", repr(name), "pass --name 'My patch'")
    return Options(target, run, out, note, steps, renders, lr, snapshots, workers, seed, name, a.checkpoint)


# ------------------------------------------------------------------------------ matching
@dataclass
class Stage:
    """One stage's kept candidate: its preset, plugin render and distances."""

    name: str
    normalized: np.ndarray  # [n_params]
    audio: np.ndarray  # [2, T] plugin render
    metrics: dict[str, float]
    renders: int  # plugin renders this stage used
    seconds: float  # wall time of the stage (compilation excluded)
    improved: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class MatchResult:
    target: Target
    stages: list[Stage]
    final: Stage
    proxy_audio: np.ndarray | None
    sample_rate: int
    timing: dict[str, float]


def _metrics(audio: np.ndarray, target: np.ndarray, sample_rate: int) -> dict[str, float]:
    from training.evaluate_core import audio_metrics

    m = audio_metrics(audio[None], target[None], sample_rate)
    return {k: float(v[0]) for k, v in m.items()}


def enable_compilation_cache() -> None:
    """JAX's persistent compilation cache, so the proxy's gradient compiles once per machine (and
    per proxy version), not once per run: ``$SYNTHPROG_JAX_CACHE`` (``off`` disables it), default
    ``~/.cache/synthprog/jax``. A cache directory already configured (``JAX_COMPILATION_CACHE_DIR``)
    is left as it is."""
    import jax
    from jax.experimental.compilation_cache import compilation_cache

    if jax.config.jax_compilation_cache_dir:
        return
    path = os.environ.get("SYNTHPROG_JAX_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "synthprog", "jax"))
    if not path or path.lower() in ("0", "off", "none"):
        return
    try:
        os.makedirs(path, exist_ok=True)
    except OSError:
        return
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    compilation_cache.reset_cache()  # a process that compiled before now uses it too


def run_match(opts: Options, say: Callable[[str], None] = print, predictor: Any = None) -> MatchResult:
    """Everything after the option checks: condition the target, predict, refine, search."""
    from training.config import from_dict

    t_all = time.perf_counter()
    cfg = from_dict(json.loads((opts.run / "config.json").read_text()))
    data = cfg.data
    target = prepare_target(opts.target, data, opts.note, say)  # bad audio fails here, before JAX loads

    from training.evaluate_core import load_predictor
    from training.search import NoteRenderer, cma_search, get_refiner, rms_db

    sr = data.sample_rate
    timing: dict[str, float] = {}
    t0 = time.perf_counter()
    enable_compilation_cache()
    if predictor is None:
        predictor = load_predictor(opts.run, opts.which)
    timing["load_s"] = time.perf_counter() - t0
    layout = predictor.layout
    note_data = dataclasses.replace(data, note=int(target.note))
    stages: list[Stage] = []
    refiner = None
    floor_db = float(rms_db(target.audio[None])[0]) - QUIET_DB  # quieter candidates are not kept
    with NoteRenderer(data, opts.workers, log=say) as renderer:
        def render(normalized: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            return renderer.render_at(normalized, [target.note] * len(normalized))

        # -- model
        t0 = time.perf_counter()
        pred = predictor.predict_normalized(target.model_input[None])
        t_pred = time.perf_counter() - t0
        audio, ok = render(pred)
        if not ok[0]:
            raise RuntimeError("the plugin failed to render the model's prediction twice; see the worker log "
                               "above (this is a plugin crash, not a problem with the target)")
        best = Stage("model", pred[0], audio[0], _metrics(audio[0], target.audio, sr), 1, t_pred, True)
        stages.append(best)
        # what a later candidate must beat: the model's distance, or anything audible when the
        # model's own preset is too quiet
        best_score = best.metrics["mss"] if rms_db(audio[:1])[0] >= floor_db else math.inf
        if not math.isfinite(best_score):
            say(f"the model's preset plays more than {QUIET_DB:.0f} dB quieter than the target: any audible "
                "candidate of the refinement or the search replaces it")

        # -- refinement through the proxy
        if opts.refine_steps > 0:
            say(f"refining through the proxy: {opts.refine_steps} steps (first use compiles the proxy's "
                "gradient: minutes; later runs reuse the compilation cache)")
            refiner = get_refiner(note_data, tuple(cfg.loss.fft_sizes), 1)
            res = refiner.refine(best.normalized[None], target.audio[None], opts.refine_steps, opts.snapshots,
                                 seed=opts.seed, lr=opts.refine_lr)
            timing["refine_compile_s"] = res.compile_seconds
            t0 = time.perf_counter()
            cands = res.candidates[1:, 0]
            audio, ok = render(cands)
            loud = rms_db(audio) >= floor_db
            scores = [_metrics(a, target.audio, sr) if k and q else None for a, k, q in zip(audio, ok, loud)]
            t_render = time.perf_counter() - t0
            quiet = int((ok & ~loud).sum())
            if quiet:
                say(f"refinement: {quiet} of {len(cands)} snapshot(s) rendered more than {QUIET_DB:.0f} dB quieter "
                    "than the target and were not kept (the distance alone would prefer silence)")
            j = min(range(len(cands)), key=lambda i: scores[i]["mss"] if scores[i] else math.inf)
            improved = scores[j] is not None and scores[j]["mss"] < best_score
            extra = {"snapshot_steps": list(res.steps), "proxy_distance": res.proxy_distance[:, 0].tolist(),
                     "plugin_mss": [best.metrics["mss"]] + [s["mss"] if s else None for s in scores],
                     "kept_step": res.steps[j + 1] if improved else 0, "too_quiet": quiet}
            st = Stage("refine", cands[j] if improved else best.normalized, audio[j] if improved else best.audio,
                       scores[j] if improved else dict(best.metrics), len(cands), res.seconds + t_render,
                       improved, extra)
            stages.append(st)
            best = st
            if improved:
                best_score = st.metrics["mss"]

        # -- CMA-ES through the plugin
        if opts.search_renders > 0:
            say(f"searching with CMA-ES through the plugin: {opts.search_renders} renders")
            sres = cma_search(lambda n, rows: render(n), target.audio[None], best.normalized[None], layout,
                              opts.search_renders, sr, start_mss=np.array([best_score]), sigma0=0.1,
                              seed=opts.seed, min_level_db=floor_db)
            improved = bool(sres.best_mss[0] < best_score)
            if improved:
                audio, ok = render(sres.best)
                m = _metrics(audio[0], target.audio, sr)
                st = Stage("search", sres.best[0], audio[0], m, int(sres.renders[0]), sres.seconds, True,
                           {"history": sres.history[0]})
            else:
                st = Stage("search", best.normalized, best.audio, dict(best.metrics), int(sres.renders[0]),
                           sres.seconds, False, {"history": sres.history[0]})
            stages.append(st)
            best = st

        # -- the written preset, read back and rendered: the audio we report is that of the file
        final_n = _write_preset(opts, best.normalized)
        audio, ok = render(final_n[None])
        final = Stage("final", final_n, audio[0], _metrics(audio[0], target.audio, sr), 1, 0.0)
        level = float(max(rms_db(audio[:1])[0], -200.0))  # -200 dBFS: digital silence
        final.extra["level_db"] = level
        final.extra["target_level_db"] = floor_db + QUIET_DB
        if level < floor_db:
            say(f"warning: the preset plays {floor_db + QUIET_DB - level:.0f} dB quieter than the target "
                "(the model's prediction was kept as it is; try --note or a longer target)")

    # -- proxy render of the kept preset (for the figure)
    proxy_audio = None
    try:
        t0 = time.perf_counter()
        if refiner is None:
            say("rendering the kept preset through the proxy for the figure (first use compiles the proxy)")
            refiner = get_refiner(note_data, tuple(cfg.loss.fft_sizes), 1)
        proxy_audio = refiner.render(final_n[None], seed=opts.seed)[0]
        timing["proxy_figure_s"] = time.perf_counter() - t0
    except Exception as e:  # the figure must not cost the user the preset
        say(f"warning: no proxy render for the figure ({type(e).__name__}: {e})")
    timing["total_s"] = time.perf_counter() - t_all
    return MatchResult(target, stages, final, proxy_audio, sr, timing)


def _write_preset(opts: Options, normalized: np.ndarray) -> np.ndarray:
    """Write the synth's preset files for PATCH (e.g. PATCH.amSynth and PATCH.fxp); return the
    normalized values read back from the primary file (what the synth will load)."""
    presets = run_synth(opts.run).presets
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    opts.preset_files[:] = presets.write(str(opts.out), opts.name, np.asarray(normalized, dtype=np.float64))
    return np.asarray(presets.read(str(opts.out), None)[1], dtype=np.float64)


def run_synth(run: str | os.PathLike):
    """The synth a run directory was trained on (from its config.json; no JAX)."""
    from proxies.synth import get_synth

    data = json.loads((Path(run) / "config.json").read_text()).get("data", {})
    return get_synth(data.get("synth", "amsynth"), data.get("spec") or None)


def write_outputs(opts: Options, result: MatchResult) -> dict[str, str]:
    """PATCH.wav, PATCH.png and PATCH.json (the preset files are already written)."""
    from proxies.render import write_wav
    from training.report import spectrogram_png

    sr = result.sample_rate
    extra = {os.path.splitext(f)[1].lstrip(".").lower() or "preset": f for f in opts.preset_files if f != str(opts.out)}
    paths = {"preset": str(opts.out), **extra,
             "wav": str(opts.out.with_suffix(".wav")), "png": str(opts.out.with_suffix(".png")),
             "json": str(opts.out.with_suffix(".json"))}
    write_wav(paths["wav"], result.final.audio, sr)
    rows = [("target (conditioned)", result.target.audio)]
    if result.proxy_audio is not None:
        rows.append(("proxy render of the preset", result.proxy_audio))
    rows.append((f"real plugin render (mss {result.final.metrics['mss']:.3f})", result.final.audio))
    Path(paths["png"]).write_bytes(spectrogram_png(rows, sr, title=f"{opts.target.name} -> {opts.out.name}, "
                                                                    f"note {result.target.note}"))
    from training.search import rms_db

    synth = run_synth(opts.run)

    report = {
        "target": result.target.source,
        "conditioning": result.target.messages,
        "note": result.target.note,
        "note_source": result.target.note_source,
        "f0_hz": result.target.f0_hz,
        "run": str(opts.run),
        "sample_rate": sr,
        "n_samples": int(result.target.audio.shape[1]),
        "stages": [{"name": s.name, "metrics": s.metrics, "renders": s.renders, "seconds": s.seconds,
                    "improved": s.improved, "level_db": float(max(rms_db(s.audio[None])[0], -200.0)),
                    **{k: v for k, v in s.extra.items() if k != "history"}}
                   for s in result.stages],
        "kept": max((s for s in result.stages if s.improved), key=lambda s: result.stages.index(s)).name,
        "final": {"metrics": result.final.metrics, "normalized": result.final.normalized.tolist(),
                  "uses_noise": not bool(synth.reproducible(result.final.normalized[None])[0]),
                  "level_db": result.final.extra.get("level_db"),
                  "target_level_db": result.final.extra.get("target_level_db")},
        "synth": synth.name,
        "parameters": {n: float(v) for n, v in zip(synth.spec.names, result.final.normalized)},
        "timing": result.timing,
        "files": paths,
        "options": {"note": opts.note, "refine_steps": opts.refine_steps, "search_renders": opts.search_renders,
                    "refine_lr": opts.refine_lr, "snapshots": opts.snapshots, "seed": opts.seed},
    }
    Path(paths["json"]).write_text(json.dumps(report, indent=1))
    return paths


def format_stages(result: MatchResult) -> str:
    lines = [f"{'stage':<10} {'mss':>8} {'log-mel L1 dB':>14} {'MFCC L1':>9} {'renders':>8} {'seconds':>8}  kept"]
    for s in result.stages + [result.final]:
        m = s.metrics
        flag = "yes" if s.improved else ""
        if s.name == "final":
            flag = "(the written preset, re-rendered)"
        lines.append(f"{s.name:<10} {m['mss']:8.4f} {m['logmel_l1']:14.3f} {m['mfcc_l1']:9.3f} {s.renders:8d} "
                     f"{s.seconds:8.2f}  {flag}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        opts = parse_options(argv)
        result = run_match(opts)
    except MatchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    paths = write_outputs(opts, result)
    print(format_stages(result))
    print("wrote: " + ", ".join(paths.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
