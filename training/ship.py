"""Make the shipped model of a synth: train (or resume) a run, then export its best checkpoint.

    python -m training.ship --config configs/amsynth_ship.toml [--set section.key=value ...] [--fresh]

The same as ``python -m training.fit`` with that config (same checks, resumable, the same
evaluation through the real engine), followed by :func:`training.shipped.export` of the best
checkpoint into ``training/shipped/<synth>/`` (``--out`` another folder of shipped models). On
CPU, fixed seeds give the same weights bit for bit: the manifest's ``weights_sha256`` says
whether a remade model is the shipped one.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

from training.cli import run_cli


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.ship", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=None, help="folder of shipped models (default: training/shipped)")
    known, rest = p.parse_known_args(argv)

    def body() -> int:
        from training import fit
        from training.config import load_config

        args = fit.parse_args(rest)
        cfg = load_config(args.config, args.overrides)
        out_root = Path(known.out) if known.out else None
        if out_root is not None:
            from training.cli import output_path

            output_path(out_root / cfg.data.synth / "manifest.json", "--out", create_parents=True)
        t0 = time.perf_counter()
        status = fit.main(rest)
        if status:
            return status
        from training.shipped import export, read_manifest

        command = "python -m training.ship " + " ".join(shlex.quote(a) for a in (argv if argv is not None else
                                                                                  sys.argv[1:]))
        folder = export(cfg.run_dir, out_root, made_by=command,
                        extra={"ship_seconds": round(time.perf_counter() - t0, 1)})
        m = read_manifest(cfg.data.synth, out_root)
        size = sum(f.stat().st_size for f in folder.iterdir())
        print(f"[ship] {folder}: {m['n_weights']:,} weights, {size / 1e6:.2f} MB, weights sha256 "
              f"{m['weights_sha256'][:16]}...")
        return 0

    return run_cli("python -m training.ship", body, argv)


if __name__ == "__main__":
    from diffsynth.runtime import reexec_with_tunables

    reexec_with_tunables()
    sys.exit(main())
