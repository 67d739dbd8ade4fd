"""Train an encoder end to end: ``python -m training.fit --config configs/amsynth.toml``.

Renders (or reuses) the dataset through the real plugin, trains with the configured loss
schedule, resumes automatically from ``runs/<name>/checkpoints/latest`` when rerun, and ends
with a real-plugin evaluation written to ``runs/<name>/summary.json``.

    python -m training.fit --config configs/amsynth.toml --set optim.steps=500 --set run.name=short
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from training.config import ConfigError, load_config


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m training.fit", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/amsynth.toml", help="TOML config (default: %(default)s)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one config value (repeatable), e.g. --set optim.lr=3e-4")
    p.add_argument("--fresh", action="store_true", help="delete runs/<name>/ first instead of resuming")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (logs only)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    # Compiled XLA programs are cached on disk (the proxy's gradient takes minutes to compile on
    # a CPU): reruns, resumed runs and runs sharing settings skip compilation. JAX reads this
    # variable; set it yourself to move the cache, or to an empty string to disable it.
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(Path(__file__).resolve().parents[1] / ".cache" / "jax"))
    from training.train import reset_run, train_and_evaluate  # after the config check: JAX loads slowly

    if args.fresh:
        reset_run(cfg.run_dir)
    train_and_evaluate(cfg, progress=not args.no_progress)
    return 0


if __name__ == "__main__":
    sys.exit(main())
