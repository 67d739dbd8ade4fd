"""Render one preset through a synth and write a float wav.

Usage::

    python -m proxies.render SYNTH (--preset FILE [--index K] | --random SEED)
        [--note 60] [--velocity 100] [--hold 1.0] [--duration 1.5] [--sr 44100]
        --out OUT.wav [--engine plugin|proxy] [--spec SPEC.json] [--allow-silent]

``SYNTH`` is a registered synth (``amsynth``, ``dexed``, ``nekobi``, ...) or ``vst:PATH`` (a
probed plugin; ``--spec`` names its spec JSON). ``FILE`` is any preset file the synth reads
(``Synth.presets``: amsynth banks, presets and ``.fxp``; DX7 ``.syx`` banks, raw banks and
hexter's files; ``.fxp`` for probed plugins); ``--index`` picks a preset in a bank (0-based).
``--hold`` (the note-off time) must lie inside the render (default 1.0 s, or 2/3 of a shorter
``--duration``), so the release is heard. A render that comes out silent (peak below -100 dBFS)
is refused (nothing written, exit status 2) unless ``--allow-silent``; bad options exit with
status 2 and one message, before anything is rendered.
``--random SEED`` samples the synth's prior with ``np.random.default_rng(SEED)``. The ``plugin``
engine is the synth's real engine (DawDreamer with the deterministic protocol of
:mod:`proxies.host`, or the in-process engine, e.g. dexed-py); ``proxy`` renders the same request
with the synth's differentiable JAX proxy (exact mode). The wav is 32-bit float, written
atomically; a one-line summary (preset name, peak, RMS dB, path) goes to stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
import tempfile
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from proxies import host
from proxies.files import OutputPathError, check_output_path, guarded_main
from proxies.synth import Synth, SynthNotFoundError, get_synth, list_synths, note_off_sample

__all__ = ["ENGINES", "main", "parse_args", "write_wav"]


@dataclass(frozen=True)
class RenderRequest:
    """What an engine renders: one preset, one note."""

    synth: Synth
    name: str
    normalized: np.ndarray  # [P] in [0, 1]
    note: host.Note
    duration_s: float
    sample_rate: int


def _render_plugin(req: RenderRequest) -> np.ndarray:
    """The synth's real engine (one worker / thread). float32 [channels, samples]."""
    engine = req.synth.open_engine(req.sample_rate, workers=1)
    try:
        audio, failures = engine.render(np.asarray(req.normalized, np.float64)[None], (req.note,), req.duration_s)
    finally:
        engine.close()
    if failures:
        raise RuntimeError(f"the {req.synth.name} engine could not render {req.name!r}: {failures[0].reason}")
    return audio[0]


def _render_proxy(req: RenderRequest) -> np.ndarray:
    """The synth's JAX proxy (calibration + render, exact mode). float32 [channels, samples]."""
    import jax.numpy as jnp

    from proxies.synth import ProxyRender, proxy_renderer

    config = ProxyRender(sample_rate=req.sample_rate, duration_s=req.duration_s, hold_s=req.note.hold_s)
    render = proxy_renderer(req.synth, config)
    audio = render(np.asarray(req.normalized, np.float32)[None], jnp.asarray([req.note.pitch], jnp.int32),
                   jnp.asarray([req.note.velocity], jnp.int32))
    return np.asarray(audio)[0]


#: engine name -> function(RenderRequest) -> float32 [channels, samples].
ENGINES: dict[str, Callable[[RenderRequest], np.ndarray]] = {"plugin": _render_plugin, "proxy": _render_proxy}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m proxies.render",
        description="Render one preset through a synth and write a 32-bit float wav.",
    )
    p.add_argument("synth", help=f"which synth: {', '.join(list_synths())}, or vst:/path/Plugin.so")
    p.add_argument("--spec", metavar="SPEC.json", help="probed spec of a vst: synth (python -m proxies.probe)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--preset", metavar="FILE", help="bank, single preset text or .fxp file")
    src.add_argument("--random", metavar="SEED", type=int, help="render a random preset sampled with this seed")
    p.add_argument("--index", metavar="K", type=int, help="preset index in a bank (0-based)")
    p.add_argument("--note", type=int, default=60, help="MIDI note 0..127 (default 60)")
    p.add_argument("--velocity", type=int, default=100, help="MIDI velocity 1..127 (default 100)")
    p.add_argument("--hold", type=float, default=None,
                   help="note length in seconds, inside the render (default 1.0, or 2/3 of a shorter --duration)")
    p.add_argument("--duration", type=float, default=1.5, help="render length in seconds (default 1.5)")
    p.add_argument("--sr", type=int, default=44100, help="sample rate in Hz (default 44100)")
    p.add_argument("--out", required=True, metavar="OUT.wav", help="output wav path")
    p.add_argument("--engine", choices=tuple(ENGINES), default="plugin", help="renderer (default plugin)")
    p.add_argument("--allow-silent", action="store_true",
                   help="write the wav even when the render is silent (peak below -100 dBFS)")
    return p


#: a render whose peak is below this is silent (-100 dBFS)
SILENT_PEAK = 1e-5
MIN_HOLD_S = 0.001


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse and check the options (argparse errors name the bad option and exit with status 2)."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.spec is not None and not str(args.synth).startswith("vst:"):
        parser.error(f"--spec only applies to a vst:/path/Plugin.so synth, not {args.synth!r}; drop --spec")
    if args.spec is not None and not os.path.isfile(args.spec):
        parser.error(f"--spec: no such file: {args.spec} (make one with python -m proxies.probe PLUGIN "
                     "--out SPEC.json)")
    try:
        args.synth = get_synth(args.synth, args.spec)
    except (SynthNotFoundError, OSError, ValueError) as e:
        parser.error(f"synth: {e}")
    if args.engine == "proxy" and args.synth.proxy is None:
        parser.error(f"--engine proxy: {args.synth.name} has no differentiable proxy; use --engine plugin")
    if args.random is not None and not 0 <= args.random < 2 ** 63:
        parser.error(f"--random must be a seed in 0..2**63-1, got {args.random}")
    if args.index is not None and args.preset is None:
        parser.error("--index K only applies to --preset FILE (a bank)")
    if args.index is not None and args.index < 0:
        parser.error(f"--index must be >= 0 (0-based), got {args.index}")
    lo, hi = args.synth.notes.lowest, args.synth.notes.highest
    if not lo <= args.note <= hi:
        parser.error(f"--note must be a MIDI note {lo}..{hi} ({args.synth.name}), got {args.note}")
    if not 1 <= args.velocity <= 127:
        parser.error(f"--velocity must be 1..127, got {args.velocity}")
    if not (math.isfinite(args.duration) and 0 < args.duration <= 600):
        parser.error(f"--duration must be in (0, 600] s, got {args.duration}")
    if args.hold is None:
        args.hold = min(1.0, round(args.duration * 2 / 3, 6))
    if not (math.isfinite(args.hold) and MIN_HOLD_S <= args.hold <= args.duration):
        parser.error(f"--hold must be a time in [{MIN_HOLD_S}, --duration = {args.duration:g}] s (the note is "
                     f"released inside the render, so its release is heard), got {args.hold:g}")
    try:
        host.check_sample_rate(args.sr)
    except ValueError as e:
        parser.error(f"--sr: {e}")
    if note_off_sample(args.hold, args.sr, args.synth.notes) < 1:
        parser.error(f"--hold {args.hold:g} s is shorter than one sample at {args.sr} Hz; hold the note longer")
    if not args.out.lower().endswith(".wav"):
        parser.error(f"--out must be a .wav path, got {args.out!r}")
    out_dir = os.path.dirname(os.path.abspath(args.out))
    if not os.path.lexists(out_dir):
        parser.error(f"--out: folder {out_dir} does not exist; create it first")
    try:
        check_output_path(args.out, "--out")
    except OutputPathError as e:
        parser.error(str(e))
    if args.preset is not None:
        if os.path.isdir(args.preset):
            parser.error(f"--preset: {args.preset} is a folder; give one preset file "
                         f"({', '.join(args.synth.presets.suffixes)})")
        if not os.path.isfile(args.preset):
            parser.error(f"--preset: no such file: {args.preset}")
        if not os.access(args.preset, os.R_OK):
            parser.error(f"--preset: {args.preset} is not readable (permissions); fix them or copy the file")
    args._parser = parser
    return args


def _load_preset(args: argparse.Namespace) -> tuple[str, np.ndarray]:
    synth: Synth = args.synth
    if args.random is not None:
        n = synth.sample_presets(np.random.default_rng(args.random), 1)[0]
        return f"random seed {args.random}", n
    try:
        name, n = synth.presets.read(args.preset, args.index)
    except (ValueError, OSError) as e:  # PresetError is a ValueError
        args._parser.error(f"--preset: {e}")
    n = np.asarray(n, dtype=np.float64)
    if n.shape != (synth.spec.n_params,) or not np.all(np.isfinite(n)):
        args._parser.error(f"--preset: {args.preset} did not give {synth.spec.n_params} finite {synth.name} "
                           "parameter values; check that it is a preset of this synth")
    return name, n


def write_wav(path: str | os.PathLike, audio: np.ndarray, sample_rate: int) -> None:
    """Write float32 ``[channels, samples]`` as a 32-bit float wav, atomically."""
    import soundfile as sf

    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".wav", dir=folder)
    os.close(fd)
    try:
        sf.write(tmp, np.asarray(audio, dtype=np.float32).T, int(sample_rate), subtype="FLOAT", format="WAV")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class RenderError(RuntimeError):
    """The engine could not render, or rendered something unusable (silent, non-finite)."""


def main(argv: Sequence[str] | None = None) -> int:
    """Usage errors: SystemExit(2) with argparse's message; a silent or broken render: one message,
    status 2, nothing written; anything unexpected: its traceback logged, the log's path printed."""
    return guarded_main("python -m proxies.render", lambda: _run(parse_args(argv)), (RenderError,), argv)


def _run(args: argparse.Namespace) -> int:
    name, normalized = _load_preset(args)
    req = RenderRequest(args.synth, name, normalized, host.Note(args.note, args.velocity, 0.0, args.hold),
                        args.duration, args.sr)
    try:
        audio = ENGINES[args.engine](req)
    except (host.PluginNotFoundError, RuntimeError) as e:  # plugin missing or unloadable
        print(f"render: error: {e}", file=sys.stderr)
        return 1
    audio = np.asarray(audio)
    if audio.ndim != 2 or audio.size == 0:
        raise RenderError(f"the {args.engine} engine returned no audio (shape {audio.shape}) for {name!r}")
    if not np.all(np.isfinite(audio)):
        raise RenderError(f"the {args.synth.name} {args.engine} engine rendered {int((~np.isfinite(audio)).sum())} "
                          f"non-finite sample(s) for {name!r}; nothing written (a broken preset or engine: try "
                          "another preset, or report it)")
    peak = float(np.max(np.abs(audio)))
    if peak < SILENT_PEAK and not args.allow_silent:
        db = 20 * math.log10(peak) if peak > 0 else -math.inf
        raise RenderError(f"the render of {name!r} (note {args.note}, velocity {args.velocity}, held {args.hold:g} s "
                          f"of {args.duration:g} s) is silent (peak {db:.0f} dBFS); nothing written. Fix: check the "
                          "preset (its volume, envelope) and the note, or pass --allow-silent to write it anyway")
    write_wav(args.out, audio, args.sr)
    rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))
    rms_db = 20 * math.log10(rms) if rms > 0 else -math.inf
    note = ""
    if not bool(args.synth.reproducible(np.asarray(normalized)[None])[0]):
        note = "  (noise waveform: not sample-reproducible)"
    if peak < SILENT_PEAK:
        note += "  (SILENT: written because of --allow-silent)"
    elif peak > 1.0:
        note += "  (peak above full scale: the float wav keeps it; lower the volume to play it unclipped)"
    print(f"{name!r}: peak {peak:.4f}, RMS {rms_db:.1f} dB, {audio.shape[0]} ch x {audio.shape[1]} samples "
          f"@ {args.sr} Hz -> {args.out}{note}")
    return 0


if __name__ == "__main__":
    from diffsynth.runtime import reexec_with_tunables

    reexec_with_tunables()  # once, with GLIBC_TUNABLES (diffsynth.runtime: faster JAX, same output)
    sys.exit(main())
