"""Fit a synth's calibration residual against its real engine.

Usage::

    python -m proxies.calibrate SYNTH [options of that synth's fit]

Each synth with a fitted calibration keeps its fit in ``proxies/<synth>/calibrate.py`` (amsynth:
a per-parameter monotone residual in front of the exact laws; see that module for its options).
"""

from __future__ import annotations

import importlib
import sys
from typing import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-"):
        print("usage: python -m proxies.calibrate SYNTH [options]  (e.g. amsynth)", file=sys.stderr)
        return 2
    from proxies.synth import SynthNotFoundError, get_synth

    try:
        synth = get_synth(argv[0])
    except SynthNotFoundError as e:
        print(f"calibrate: error: {e}", file=sys.stderr)
        return 2
    try:
        module = importlib.import_module(f"proxies.{synth.name}.calibrate")
    except ModuleNotFoundError:
        print(f"calibrate: error: {synth.name} has no fitted calibration (its laws are exact or it has no proxy)",
              file=sys.stderr)
        return 2
    return int(module.main(argv[1:]))


if __name__ == "__main__":
    from diffsynth.runtime import reexec_with_tunables

    reexec_with_tunables()  # once, with GLIBC_TUNABLES (diffsynth.runtime: faster JAX, same output)
    sys.exit(main())
