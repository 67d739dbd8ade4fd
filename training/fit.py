"""Train an encoder end to end: ``python -m training.fit --config configs/amsynth.toml``.

Renders (or reuses) the dataset through the real plugin, trains with the configured loss
schedule, resumes automatically from ``runs/<name>/checkpoints/latest`` when rerun (from
``best`` when ``latest`` is damaged, and it says so), and ends with a real-plugin evaluation
written to ``runs/<name>/summary.json``.

    python -m training.fit --config configs/amsynth.toml --set optim.steps=500 --set run.name=short

Before any work it checks the config, that the run folder and the data cache can be written,
and how much disk the dataset needs (presets x channels x samples x bytes per sample) against
the free space. ``--fresh`` deletes ``runs/<name>/`` only when it is a run fit made (it holds
``.synthprog-run``, or config.json and checkpoints/); any other folder is refused, by name.
Datasets over ``MAX_PRESETS`` presets or ``MAX_DATASET_BYTES``, and more than ``MAX_STEPS``
steps, need ``--allow-large``. Bad input ends with one message and exit status 2; an
unexpected error prints where its traceback was logged (``~/.cache/synthprog/logs/``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from training.cli import MatchError, is_run_dir, run_cli
from training.config import Config, ConfigError, load_config

MAX_PRESETS = 1_000_000  # presets in one dataset without --allow-large
MAX_DATASET_BYTES = 100 * 2 ** 30  # 100 GiB of shards without --allow-large
MAX_STEPS = 10_000_000  # optimiser steps without --allow-large
DISK_MARGIN_BYTES = 256 * 2 ** 20  # left free after the dataset


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m training.fit", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/amsynth.toml", help="TOML config (default: %(default)s)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one config value (repeatable), e.g. --set optim.lr=3e-4")
    p.add_argument("--fresh", action="store_true",
                   help="delete runs/<name>/ first instead of resuming (only a run folder fit made)")
    p.add_argument("--allow-large", action="store_true",
                   help=f"allow a dataset over {MAX_PRESETS:,} presets or {MAX_DATASET_BYTES / 2 ** 30:.0f} GiB, "
                        f"or over {MAX_STEPS:,} steps")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (logs only)")
    return p.parse_args(argv)


def _gb(n: float) -> str:
    if n >= 1e12:
        return f"{n / 1e12:.3g} TB"
    return f"{n / 1e9:.3g} GB" if n >= 1e8 else f"{n / 1e6:.3g} MB"


def dataset_bytes(cfg: Config) -> tuple[int, int, Path, int, int]:
    """(bytes the whole dataset takes, bytes of it already on disk, its folder, channels, presets):
    presets x channels x samples x bytes per sample, plus the parameter arrays."""
    import numpy as np

    from training.data import data_fingerprint, dataset_dir, split_sizes, synth_of, training_factory_prior

    d = cfg.data
    synth = synth_of(d)
    n = sum(split_sizes(d).values())
    per = synth.channels * d.n_samples * np.dtype(d.audio_dtype).itemsize + synth.spec.n_params * (8 + 4) + 16
    prior = training_factory_prior(d, cfg.eval.n_factory)
    root = dataset_dir(d, data_fingerprint(d, synth.spec, prior))
    have = sum(f.stat().st_size for f in root.glob("*.npz")) if root.is_dir() else 0
    return int(n * per), int(have), root, int(synth.channels), int(n)


def preflight(cfg: Config, args: argparse.Namespace, log=print) -> None:
    """Everything checked before JAX loads or a plugin renders: output folders, --fresh, sizes."""
    from proxies.files import OutputPathError, check_output_dir

    run_dir = cfg.run_dir
    try:
        check_output_dir(cfg.run.runs_dir, "run.runs_dir")
        check_output_dir(run_dir, "run.runs_dir/run.name")
        check_output_dir(cfg.data.cache_dir, "data.cache_dir")
    except OutputPathError as e:
        raise ConfigError(str(e)) from None
    if os.path.lexists(run_dir):
        if args.fresh and not is_run_dir(run_dir):
            what = "a file" if not run_dir.is_dir() else "a folder that is not a run"
            raise ConfigError(f"--fresh: {run_dir} (run.runs_dir/run.name) is {what}: it holds no .synthprog-run "
                              "marker and no config.json + checkpoints/ written by training.fit; refusing to delete "
                              "it. Fix: check run.runs_dir and run.name (--set run.name=...), or move that folder "
                              "away yourself")
        if run_dir.is_dir() and not args.fresh and any(run_dir.iterdir()) and not (
                is_run_dir(run_dir) or (run_dir / "config.json").is_file()):
            raise ConfigError(f"{run_dir} (run.runs_dir/run.name) exists and holds files training.fit did not "
                              "write; expected a new or empty folder, or a run to resume. Fix: pick another "
                              "run.name (--set run.name=...) or run.runs_dir")
    d = cfg.data
    if cfg.optim.steps > MAX_STEPS and not args.allow_large:
        raise ConfigError(f"optim.steps: expected at most {MAX_STEPS:,} steps, got {cfg.optim.steps:,} (a typo costs "
                          "days); fix: lower optim.steps, or pass --allow-large if you mean it")
    total, have, root, channels, n = dataset_bytes(cfg)
    need = max(0, total - have)
    gallery = f" + {d.n_train:,} (gallery)" if d.note_range else ""
    what = (f"the dataset ({d.n_train:,}{gallery} + {d.n_val:,} + {d.n_test:,} = {n:,} presets x {channels} channel(s) x "
            f"{d.n_samples:,} samples x {d.audio_dtype}) takes {_gb(total)}")
    if (n > MAX_PRESETS or total > MAX_DATASET_BYTES) and not args.allow_large:
        raise ConfigError(f"data.n_train: {what}; expected at most {MAX_PRESETS:,} presets and "
                          f"{_gb(MAX_DATASET_BYTES)} (rendering that many takes hours to days); fix: lower "
                          "data.n_train (or duration_s, sample_rate), or pass --allow-large if you mean it")
    if need:
        probe = root
        while not probe.exists() and probe.parent != probe:
            probe = probe.parent
        free = shutil.disk_usage(probe).free
        if need + DISK_MARGIN_BYTES > free:
            raise ConfigError(f"data.cache_dir: {what}; {_gb(need)} of it is still to be written, but {probe} has "
                              f"only {_gb(free)} free; fix: free space, point data.cache_dir at a larger disk, or "
                              "lower data.n_train")
        log(f"[fit] {what}; {_gb(need)} to render into {root} ({_gb(free)} free)")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def body() -> int:
        cfg = load_config(args.config, args.overrides)
        preflight(cfg, args)
        # Compiled XLA programs are cached on disk (the proxy's gradient takes minutes to compile on
        # a CPU): reruns, resumed runs and runs sharing settings skip compilation. JAX reads this
        # variable; set it yourself to move the cache, or to an empty string to disable it.
        os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                              str(Path(__file__).resolve().parents[1] / ".cache" / "jax"))
        from training.train import reset_run, train_and_evaluate  # after the checks: JAX loads slowly

        if args.fresh:
            reset_run(cfg.run_dir)
        train_and_evaluate(cfg, progress=not args.no_progress)
        return 0

    return run_cli("python -m training.fit", body, argv)


__all__ = ["main", "parse_args", "preflight", "dataset_bytes", "MatchError"]

if __name__ == "__main__":
    from diffsynth.runtime import reexec_with_tunables

    reexec_with_tunables()  # once, with GLIBC_TUNABLES (diffsynth.runtime: faster JAX, same output)
    sys.exit(main())
