"""Fit a proxy's calibration residual against the real plugin.

Usage::

    python -m proxies.calibrate amsynth [--n 32] [--seed 0] [--steps 40] [--sr 22050]
        [--duration 1.0] [--hold 0.7] [--out proxies/amsynth/calibration_residual.json]

Renders ``--n`` random presets without noise (their plugin renders are reproducible) through
the real plugin (``proxies.host``, deterministic protocol), then fits the per-parameter
monotone residual of :mod:`proxies.amsynth.calibration` by minimising the proxy-vs-plugin
multi-resolution STFT distance, starting from the identity. The fit is kept only if it lowers
the distance; the JSON records the losses before and after.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Sequence

import numpy as np


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m proxies.calibrate amsynth", description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=32, help="presets to fit on (default 32)")
    p.add_argument("--seed", type=int, default=0, help="preset sampling seed (default 0)")
    p.add_argument("--steps", type=int, default=40, help="optimiser steps (default 40)")
    p.add_argument("--batch", type=int, default=8, help="presets per step (default 8)")
    p.add_argument("--sr", type=int, default=22050, help="sample rate of the fit renders (default 22050)")
    p.add_argument("--duration", type=float, default=1.0, help="render length s (default 1.0)")
    p.add_argument("--hold", type=float, default=0.7, help="note length s (default 0.7)")
    p.add_argument("--out", default=None, help="output JSON (default: the file shipped in the package)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.n < 1 or args.steps < 0:
        raise SystemExit(f"--n must be >= 1 and --steps >= 0; got --n {args.n} --steps {args.steps}")
    from proxies import host
    from proxies.amsynth import calibration as cal
    from proxies.amsynth.recipe import AMSYNTH_PLUGIN
    from proxies.amsynth.spec import AMSYNTH, uses_noise

    rng = np.random.default_rng(args.seed)
    presets = np.empty((0, AMSYNTH.n_params))
    while len(presets) < args.n:
        draw = AMSYNTH.sample_normalized(rng, 4 * args.n)
        presets = np.concatenate([presets, draw[~uses_noise(draw)]])
    presets = presets[: args.n]
    config = cal.ProxyConfig(sample_rate=args.sr, duration_s=args.duration, hold_s=args.hold)
    t0 = time.time()
    audio = host.render_batch(AMSYNTH_PLUGIN, presets, notes=(host.Note(config.note, config.velocity, 0.0, args.hold),),
                              duration_s=args.duration, sample_rate=args.sr)
    print(f"rendered {len(presets)} presets through the plugin in {time.time() - t0:.1f} s")
    residual, info = cal.fit_residual(presets.astype(np.float32), audio, config, steps=args.steps,
                                      batch_size=args.batch, seed=args.seed)
    meta = {**info, "seed": args.seed, "sample_rate": args.sr, "duration_s": args.duration, "hold_s": args.hold}
    out = args.out or cal.RESIDUAL_PATH
    cal.save_residual(residual, out, meta)
    kept = "fitted residual kept" if info["accepted"] else "fit did not help: identity kept"
    print(f"{kept}; wrote {out}")
    return 0


if __name__ == "__main__":
    from diffsynth.runtime import reexec_with_tunables

    reexec_with_tunables()  # once, with GLIBC_TUNABLES (diffsynth.runtime: faster JAX, same output)
    sys.exit(main())
