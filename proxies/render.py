"""Render one preset through a synth and write a float wav.

Usage::

    python -m proxies.render SYNTH (--preset FILE [--index K] | --random SEED)
        [--note 60] [--velocity 100] [--hold 1.0] [--duration 1.5] [--sr 44100]
        --out OUT.wav [--engine plugin|proxy] [--spec SPEC.json]

``SYNTH`` is a registered synth (``amsynth``, ``dexed``, ``nekobi``, ...) or ``vst:PATH`` (a
probed plugin; ``--spec`` names its spec JSON). ``FILE`` is any preset file the synth reads
(``Synth.presets``: amsynth banks, presets and ``.fxp``; DX7 ``.syx`` banks, raw banks and
hexter's files; ``.fxp`` for probed plugins); ``--index`` picks a preset in a bank (0-based).
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
from proxies.synth import Synth, SynthNotFoundError, get_synth, list_synths

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
    p.add_argument("--hold", type=float, default=1.0, help="note length in seconds (default 1.0)")
    p.add_argument("--duration", type=float, default=1.5, help="render length in seconds (default 1.5)")
    p.add_argument("--sr", type=int, default=44100, help="sample rate in Hz (default 44100)")
    p.add_argument("--out", required=True, metavar="OUT.wav", help="output wav path")
    p.add_argument("--engine", choices=tuple(ENGINES), default="plugin", help="renderer (default plugin)")
    return p


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse and check the options (argparse errors name the bad option and exit with status 2)."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        args.synth = get_synth(args.synth, args.spec)
    except (SynthNotFoundError, OSError, ValueError) as e:
        parser.error(f"synth: {e}")
    if args.engine == "proxy" and args.synth.proxy is None:
        parser.error(f"--engine proxy: {args.synth.name} has no differentiable proxy; use --engine plugin")
    if args.index is not None and args.preset is None:
        parser.error("--index K only applies to --preset FILE (a bank)")
    if args.index is not None and args.index < 0:
        parser.error(f"--index must be >= 0 (0-based), got {args.index}")
    if not 0 <= args.note <= 127:
        parser.error(f"--note must be a MIDI note 0..127, got {args.note}")
    if not 1 <= args.velocity <= 127:
        parser.error(f"--velocity must be 1..127, got {args.velocity}")
    if not (math.isfinite(args.hold) and args.hold > 0):
        parser.error(f"--hold must be a time > 0 s, got {args.hold}")
    if not (math.isfinite(args.duration) and 0 < args.duration <= 600):
        parser.error(f"--duration must be in (0, 600] s, got {args.duration}")
    try:
        host.check_sample_rate(args.sr)
    except ValueError as e:
        parser.error(f"--sr: {e}")
    if not args.out.lower().endswith(".wav"):
        parser.error(f"--out must be a .wav path, got {args.out!r}")
    out_dir = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(out_dir):
        parser.error(f"--out: folder {out_dir} does not exist")
    if args.preset is not None and not os.path.isfile(args.preset):
        parser.error(f"--preset: no such file: {args.preset}")
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
    return name, np.asarray(n, dtype=np.float64)


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


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    name, normalized = _load_preset(args)
    req = RenderRequest(args.synth, name, normalized, host.Note(args.note, args.velocity, 0.0, args.hold),
                        args.duration, args.sr)
    try:
        audio = ENGINES[args.engine](req)
    except (host.PluginNotFoundError, RuntimeError) as e:  # plugin missing or unloadable
        print(f"render: error: {e}", file=sys.stderr)
        return 1
    write_wav(args.out, audio, args.sr)
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))) if audio.size else 0.0
    rms_db = 20 * math.log10(rms) if rms > 0 else -math.inf
    note = ""
    if not bool(args.synth.reproducible(np.asarray(normalized)[None])[0]):
        note = "  (noise waveform: not sample-reproducible)"
    print(f"{name!r}: peak {peak:.4f}, RMS {rms_db:.1f} dB, {audio.shape[0]} ch x {audio.shape[1]} samples "
          f"@ {args.sr} Hz -> {args.out}{note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
