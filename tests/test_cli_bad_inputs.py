"""Every command line under bad input: nothing lost, nothing silently wrong.

A table of bad inputs for every CLI (``proxies.render`` with amsynth, dexed, nekobi and ``vst:``
synths, ``proxies.fidelity``, ``proxies.probe``, ``training.fit``, ``training.match``,
``training.evaluate``). Each case gives the argv, the exit status expected, a phrase of the
expected message, and what class of failure it guards (the issue's classes):

* ``data loss``: something the tool did not create is deleted or written into;
* ``wrong success``: exit 0 (or work that goes on) for input whose result is wrong;
* ``work lost``: outputs that cannot be written are found only after the work, or are not
  written as a set;
* ``traceback``: a traceback instead of one message;
* ``misleading``: a message that names the wrong problem;
* ``unbounded``: an option whose typo costs days or fills the disk.

Every case runs in its own folder, in this process (``main(argv)``; ``SystemExit`` caught), with
tripwires on the heavy work (dataset rendering, render pools, the fidelity engines, probing):
bad input must be refused before it. After the call the case folder must be byte for byte as
it was (no file left behind, none changed), nothing may appear outside it, a user error (status
2) must print exactly one ``error:`` line and no traceback, and an unexpected error (status 1)
must print the path of a log file holding the traceback (``$SYNTHPROG_LOG_DIR``).

A few cases need a trained run (damaged and mismatched checkpoints, a late failure in match or
evaluate, fit resuming from ``best``): one tiny run is trained once per module with
``training.fit`` in this process (24 renders of 0.25 s, 6 steps).

``CLI_BAD_INPUTS_REPORT=FILE`` appends one JSON line per case (its problems, empty when it
passed) to FILE: that is how the before/after table of the issue was made.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import importlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

# a failed orbax restore leaves its read coroutines unawaited (orbax's, not ours)
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "configs" / "amsynth.toml")
NEKOBI_SO = "/usr/lib/vst/Nekobi-vst.so"
NEKOBI_SPEC = str(ROOT / "proxies" / "vst_specs" / "nekobi.json")
AMSYNTH_BANK = "/usr/share/amsynth/banks/BriansBank01.amSynth.bank"
DX7_BANK = "/usr/share/hexter/dx7_roms.dx7"  # 128 voices
LONG = "x" * 300  # longer than any file system's name limit (255 bytes)
OUTSIDE = "/synthprog-bad-input-test"  # must never be created

MAINS = {"render": "proxies.render", "fidelity": "proxies.fidelity", "probe": "proxies.probe",
         "fit": "training.fit", "match": "training.match", "evaluate": "training.evaluate", "ship": "training.ship"}

#: the tiny run: 24 renders of 0.25 s at 16 kHz, 6 steps of parameter loss, no proxy anywhere
TINY = ["data.n_train=16", "data.n_val=4", "data.n_test=4", "data.shard_size=8", "data.workers=1",
        "data.duration_s=0.25", "data.hold_s=0.15", "features.n_fft=512", "features.hop=128", "features.n_mels=32",
        "model.channels=[4, 8]", "model.hidden=16", "loss.schedule=param", "loss.fft_sizes=[128, 512]",
        "optim.batch_size=4", "optim.steps=6", "optim.log_every=3", "optim.eval_every=3",
        "optim.checkpoint_every=3", "optim.lr_warmup_steps=0", "eval.n_random=2", "eval.n_factory=1",
        "eval.batch_size=4", "eval.proxy_search_rounds=0", "eval.proxy_refine_steps=0", "eval.val_distance=param"]


def _sets(items: list[str]) -> list[str]:
    out = []
    for o in items:
        out += ["--set", o]
    return out


def tiny_fit_argv(runs_dir: str, cache_dir: str, name: str = "tiny", *extra: str) -> list[str]:
    return ["--config", CONFIG, "--no-progress", *_sets([f"run.name={name}", f"run.runs_dir={runs_dir}",
                                                        f"data.cache_dir={cache_dir}", *TINY, *extra])]


class Ctx:
    """What the cases share: the tiny trained run (built on first use) and its data cache."""

    def __init__(self, base: Path):
        self.base = base
        self._tiny: Path | None = None

    @property
    def cache(self) -> str:
        return str(self.base / "data")

    @property
    def tiny(self) -> Path:
        if self._tiny is None:
            from training.fit import main

            rc = main(tiny_fit_argv(str(self.base / "runs"), self.cache))
            run = self.base / "runs" / "tiny"
            assert rc == 0 and (run / "summary.json").is_file(), "the tiny run did not train"
            self._tiny = run
        return self._tiny


@pytest.fixture(scope="module")
def ctx(tmp_path_factory) -> Ctx:
    return Ctx(tmp_path_factory.mktemp("shared"))


# ------------------------------------------------------------------------------ input makers
def tone(path: Path, sr: int = 16000, seconds: float = 0.5, amp: float = 0.3, dc: float = 0.0,
         subtype: str | None = None, n: int | None = None) -> Path:
    import soundfile as sf

    t = np.arange(n if n is not None else int(sr * seconds)) / max(sr, 1)
    x = amp * np.sin(2 * np.pi * 262.0 * t) + dc
    sf.write(path, x[:, None], sr, subtype=subtype)
    return path


def copy_run(ctx: Ctx, dest: Path, *, runs_dir: str | None = None, edit: Callable[[dict], None] | None = None) -> Path:
    """A private copy of the tiny run; config.json rewritten exactly as fit writes it (so a
    resume that rewrites it changes nothing) with ``runs_dir`` and ``edit`` applied."""
    shutil.copytree(ctx.tiny, dest)
    cfg = json.loads((dest / "config.json").read_text())
    if runs_dir is not None:
        cfg["run"]["runs_dir"] = runs_dir
    if edit is not None:
        edit(cfg)
    (dest / "config.json").write_text(json.dumps(cfg, indent=1) + "\n")
    return dest


def damage(run: Path, which: str) -> None:
    """Truncate every data file of a checkpoint (what a full disk or a killed copy leaves)."""
    files = [f for f in (run / "checkpoints" / which).rglob("*") if f.is_file() and f.parent.name == "d"]
    assert files, f"no checkpoint data files under {run}/checkpoints/{which}"
    for f in files:
        f.write_bytes(f.read_bytes()[:20])


def fake_run(d: Path, name: str = "run", marker: bool = True, **edit: Any) -> Path:
    """A run folder that passes the option checks, without weights (heavy work must not start)."""
    from training.config import load_config

    run = d / name
    for which in ("best", "latest"):
        (run / "checkpoints" / which / "6").mkdir(parents=True)
    cfg = load_config(CONFIG, [*TINY, *[f"{k.replace('__', '.')}={v}" for k, v in edit.items()]]).to_dict()
    (run / "config.json").write_text(json.dumps(cfg, indent=1) + "\n")
    if marker:
        (run / ".synthprog-run").write_text("a run\n")
    return run


def quiet_preset(path: Path) -> Path:
    """An amsynth preset with its master volume at 0: it renders silence."""
    from proxies.amsynth.presets import read_bank, write_preset_text
    from proxies.amsynth.spec import AMSYNTH

    p = read_bank(AMSYNTH_BANK)[3]
    internal = np.array(p.internal, copy=True)
    internal[AMSYNTH.names.index("master_vol")] = 0.0
    write_preset_text(path, dataclasses.replace(p, internal=internal))
    return path


def old_set(d: Path, stem: str, suffixes: tuple[str, ...]) -> None:
    """A previous run's outputs, which a failed run must leave exactly as they are."""
    for s in suffixes:
        (d / f"{stem}{s}").write_bytes(f"previous {stem}{s}\n".encode())


# ------------------------------------------------------------------------------ the table
@dataclasses.dataclass
class Case:
    id: str
    cli: str
    argv: list[str]
    code: int
    phrase: str  # regex searched in stdout + stderr
    cls: str  # the class
    setup: Callable[[Path, Ctx], Any] | None = None
    patch: Callable[[pytest.MonkeyPatch, Path], None] | None = None
    real: bool = False  # no tripwires: the case runs real work (plugin renders, training)
    changes: bool = False  # a success case: its folder may change
    outside: tuple[str, ...] = ()  # absolute paths that must not exist afterwards


def _mk(*names: str, files: dict[str, bytes] | None = None) -> Callable[[Path, Ctx], None]:
    def setup(d: Path, ctx: Ctx) -> None:
        for n in names:
            (d / n).mkdir(parents=True, exist_ok=True)
        for n, data in (files or {}).items():
            (d / n).parent.mkdir(parents=True, exist_ok=True)
            (d / n).write_bytes(data)
    return setup


def _both(*fns: Callable[[Path, Ctx], Any]) -> Callable[[Path, Ctx], None]:
    def setup(d: Path, ctx: Ctx) -> None:
        for f in fns:
            f(d, ctx)
    return setup


def _raise(exc: BaseException) -> Callable[..., Any]:
    def f(*a: Any, **k: Any) -> Any:
        raise exc
    return f


def _disk_usage_tiny(*a: Any, **k: Any):
    return shutil._ntuple_diskusage(10 ** 12, 10 ** 12 - 10 ** 7, 10 ** 7)  # 10 MB free


R = ["--duration", "0.2", "--sr", "16000"]  # short renders
RND = ["--random", "1", "--out", "{d}/o.wav", *R]
TONE = _both(lambda d, c: tone(d / "tone.wav"))
FILES = {"notes.txt": b"not a folder\n"}
NOTES = _mk(files=FILES)
PHOTOS = _mk("photos", files={"photos/holiday.jpg": b"\xff\xd8 a photo", **FILES})
CRLF = open(AMSYNTH_BANK, "rb").read().replace(b"\n", b"\r\n") if os.path.exists(AMSYNTH_BANK) else b""

CASES: list[Case] = [
    # -------------------------------------------------------------------- proxies.render
    Case("render-hold-1e9", "render", ["amsynth", *RND, "--hold", "1e9"], 2, r"--hold must be a time in",
         "wrong success"),
    Case("render-hold-1e-9", "render", ["amsynth", *RND, "--hold", "1e-9"], 2, r"--hold must be a time in",
         "wrong success"),
    Case("render-dexed-hold-1e9", "render", ["dexed", *RND, "--hold", "1e9"], 2, r"--hold must be", "wrong success"),
    Case("render-dexed-hold-1e-9", "render", ["dexed", *RND, "--hold", "1e-9"], 2, r"--hold must be",
         "wrong success"),
    Case("render-vst-hold-beyond", "render", [f"vst:{NEKOBI_SO}", "--spec", NEKOBI_SPEC, *RND, "--hold", "5"], 2,
         r"--hold must be", "wrong success"),
    Case("render-nekobi-hold-nan", "render", ["nekobi", *RND, "--hold", "nan"], 2, r"--hold must be", "wrong success"),
    Case("render-silent-preset", "render", ["amsynth", "--preset", "{d}/quiet.amSynth", "--out", "{d}/o.wav", *R], 2,
         r"is silent .*--allow-silent", "wrong success", setup=lambda d, c: quiet_preset(d / "quiet.amSynth")),
    Case("render-random-negative", "render", ["amsynth", "--random", "-5", "--out", "{d}/o.wav", *R], 2,
         r"--random must be a seed", "traceback"),
    Case("render-dexed-random-negative", "render", ["dexed", "--random", "-1", "--out", "{d}/o.wav", *R], 2,
         r"--random must be a seed", "traceback"),
    Case("render-out-readonly", "render", ["amsynth", "--random", "1", "--out", "/proc/o.wav", *R], 2,
         r"cannot write in /proc", "work lost"),
    Case("render-out-under-file", "render", ["amsynth", "--random", "1", "--out", "{d}/notes.txt/o.wav", *R], 2,
         r"notes\.txt is a file, not a folder", "misleading", setup=NOTES),
    Case("render-out-long-name", "render", ["amsynth", "--random", "1", "--out", f"{{d}}/{LONG}.wav", *R], 2,
         r"the file system allows 255", "work lost"),
    Case("render-out-is-folder", "render", ["amsynth", "--random", "1", "--out", "{d}/o.wav", *R], 2,
         r"is a folder", "traceback", setup=_mk("o.wav")),
    Case("render-vst-out-long-name", "render", [f"vst:{NEKOBI_SO}", "--spec", NEKOBI_SPEC, "--random", "1",
                                                "--out", f"{{d}}/{LONG}.wav", *R], 2, r"allows 255", "work lost"),
    Case("render-empty-bank", "render", ["amsynth", "--preset", "{d}/empty.bank", "--out", "{d}/o.wav", *R], 2,
         r"holds no presets", "misleading", setup=_mk(files={"empty.bank": b"amSynth\n"})),
    Case("render-crlf-bank", "render", ["amsynth", "--preset", "{d}/crlf.bank", "--index", "1", "--out", "{d}/o.wav",
                                        *R], 2, r"Windows \(CRLF\) line endings", "misleading",
         setup=_mk(files={"crlf.bank": CRLF})),
    Case("render-preset-is-folder", "render", ["amsynth", "--preset", "{d}/bank", "--out", "{d}/o.wav", *R], 2,
         r"--preset: .*is a folder", "misleading", setup=_mk("bank")),
    Case("render-preset-empty-file", "render", ["amsynth", "--preset", "{d}/e.amSynth", "--out", "{d}/o.wav", *R], 2,
         r"--preset: .*not an amsynth preset", "traceback", setup=_mk(files={"e.amSynth": b""})),
    Case("render-fxp-truncated", "render", ["amsynth", "--preset", "{d}/t.fxp", "--out", "{d}/o.wav", *R], 2,
         r"--preset: ", "traceback", setup=_mk(files={"t.fxp": b"CcnK\x00\x00\x01\x00FxCk"})),
    Case("render-dexed-index-out-of-range", "render", ["dexed", "--preset", DX7_BANK, "--index", "200",
                                                       "--out", "{d}/o.wav", *R], 2, r"out of range", "misleading"),
    Case("render-dexed-amsynth-bank", "render", ["dexed", "--preset", AMSYNTH_BANK, "--out", "{d}/o.wav", *R], 2,
         r"--preset: ", "traceback"),
    Case("render-vst-missing-plugin", "render", ["vst:/nonexistent/Plug.so", "--random", "1", "--out", "{d}/o.wav",
                                                 *R], 2, r"synth: ", "traceback"),
    Case("render-vst-not-a-plugin", "render", ["vst:{d}/notes.txt", "--random", "1", "--out", "{d}/o.wav", *R], 2,
         r"synth: ", "traceback", setup=NOTES),
    Case("render-vst-spec-missing", "render", [f"vst:{NEKOBI_SO}", "--spec", "{d}/nope.json", "--random", "1",
                                               "--out", "{d}/o.wav", *R], 2, r"--spec: no such file",
         "misleading"),
    Case("render-spec-for-registered-synth", "render", ["amsynth", "--spec", NEKOBI_SPEC, *RND], 2,
         r"--spec only applies to a vst:", "wrong success"),
    Case("render-nekobi-engine-proxy", "render", ["nekobi", "--engine", "proxy", *RND], 2,
         r"no differentiable proxy", "traceback"),
    Case("render-unknown-synth", "render", ["moog", *RND], 2, r"unknown synth 'moog'", "misleading"),
    Case("render-sr-7", "render", ["amsynth", "--random", "1", "--out", "{d}/o.wav", "--sr", "7"], 2,
         r"unsupported sample rate 7", "traceback"),
    Case("render-duration-1e9", "render", ["amsynth", "--random", "1", "--out", "{d}/o.wav", "--duration", "1e9"], 2,
         r"--duration must be in", "unbounded"),
    # -------------------------------------------------------------------- proxies.fidelity
    Case("fidelity-n-700-factory", "fidelity", ["amsynth", "--n", "700", "--presets", "factory"], 2,
         r"only \d+ noise presets", "wrong success"),
    Case("fidelity-sr-7", "fidelity", ["amsynth", "--n", "4", "--presets", "random", "--sr", "7"], 2,
         r"--sr: unsupported sample rate 7", "traceback"),
    Case("fidelity-workers-0", "fidelity", ["amsynth", "--n", "4", "--presets", "random", "--workers", "0"], 2,
         r"--workers must be in 1\.\.", "traceback"),
    Case("fidelity-batch-0", "fidelity", ["amsynth", "--n", "4", "--presets", "random", "--batch", "0"], 2,
         r"--batch must be in 1\.\.", "traceback"),
    Case("fidelity-n-1", "fidelity", ["amsynth", "--n", "1", "--presets", "random"], 2, r"--n must be in 2\.\.",
         "misleading"),
    Case("fidelity-n-1e7", "fidelity", ["amsynth", "--n", "10000000", "--presets", "random"], 2,
         r"--n must be in 2\.\.", "unbounded"),
    Case("fidelity-diagnose-negative", "fidelity", ["amsynth", "--n", "4", "--presets", "random", "--diagnose", "-1"],
         2, r"--diagnose must be", "wrong success"),
    Case("fidelity-seed-negative", "fidelity", ["amsynth", "--n", "4", "--presets", "random", "--seed", "-1"], 2,
         r"--seed must be", "traceback"),
    Case("fidelity-json-under-file", "fidelity", ["amsynth", "--n", "4", "--presets", "random",
                                                  "--json", "{d}/notes.txt/r.json"], 2, r"is a file, not a folder",
         "work lost", setup=NOTES),
    Case("fidelity-json-long-name", "fidelity", ["amsynth", "--n", "4", "--presets", "random",
                                                 "--json", f"{{d}}/{LONG}.json"], 2, r"allows 255", "work lost"),
    Case("fidelity-json-readonly", "fidelity", ["amsynth", "--n", "4", "--presets", "random", "--json",
                                                "/proc/r.json"], 2, r"cannot write in /proc", "work lost"),
    Case("fidelity-json-not-json", "fidelity", ["amsynth", "--n", "4", "--presets", "random", "--json", "{d}/r.txt"],
         2, r"--json must be a file name ending in \.json", "wrong success"),
    Case("fidelity-no-proxy", "fidelity", ["nekobi", "--n", "4", "--presets", "random"], 2,
         r"nekobi has no differentiable proxy", "traceback"),
    Case("fidelity-unknown-synth", "fidelity", ["moog", "--n", "4", "--presets", "random"], 2,
         r"unknown synth 'moog'", "traceback"),
    # -------------------------------------------------------------------- proxies.probe
    Case("probe-points-1e5", "probe", [NEKOBI_SO, "--out", "{d}/s.json", "--points", "100000"], 2,
         r"--points must be in 3\.\.", "unbounded"),
    Case("probe-presets-1000", "probe", [NEKOBI_SO, "--out", "{d}/s.json", "--presets", "1000"], 2,
         r"--presets must be in 0\.\.", "unbounded"),
    Case("probe-seed-negative", "probe", [NEKOBI_SO, "--out", "{d}/s.json", "--seed", "-3"], 2,
         r"--seed must be >= 0", "traceback"),
    Case("probe-out-under-file", "probe", [NEKOBI_SO, "--out", "{d}/notes.txt/s.json"], 2,
         r"is a file, not a folder", "misleading", setup=NOTES),
    Case("probe-out-long-name", "probe", [NEKOBI_SO, "--out", f"{{d}}/{LONG}.json"], 2, r"allows 255", "work lost"),
    Case("probe-out-readonly", "probe", [NEKOBI_SO, "--out", "/proc/s.json"], 2, r"cannot write in /proc|not writable",
         "work lost"),
    Case("probe-out-not-json", "probe", [NEKOBI_SO, "--out", "{d}/s.txt"], 2, r"ending in \.json", "wrong success"),
    Case("probe-plugin-missing", "probe", ["{d}/nope.so", "--out", "{d}/s.json"], 2, r"nope\.so not found",
         "misleading"),
    Case("probe-not-a-library", "probe", ["{d}/fake.so", "--out", "{d}/s.json"], 2, r"not a shared library",
         "traceback", setup=_mk(files={"fake.so": b"not a library"})),
    # -------------------------------------------------------------------- training.fit
    Case("fit-fresh-deletes-a-folder", "fit", ["--config", CONFIG, "--fresh", *_sets(
        ["run.runs_dir={d}", "run.name=photos"])], 2, r"refusing to delete it", "data loss", setup=PHOTOS),
    Case("fit-fresh-on-a-file", "fit", ["--config", CONFIG, "--fresh", *_sets(
        ["run.runs_dir={d}", "run.name=notes.txt"])], 2, r"notes\.txt.*is a file", "traceback", setup=NOTES),
    Case("fit-writes-into-a-foreign-folder", "fit", ["--config", CONFIG, *_sets(
        ["run.runs_dir={d}", "run.name=photos", "data.cache_dir={d}/data"])], 2,
         r"holds files training\.fit did not write", "data loss", setup=PHOTOS),
    Case("fit-runs-dir-empty", "fit", ["--config", CONFIG, "--set", "run.runs_dir=",
                                       *_sets(["data.cache_dir={d}/data"])], 2,
         r"run\.runs_dir: expected a folder that holds runs", "data loss"),
    Case("fit-runs-dir-dot", "fit", ["--config", CONFIG, *_sets(["run.runs_dir=.", "data.cache_dir={d}/data"])], 2,
         r"run\.runs_dir: expected", "data loss"),
    Case("fit-runs-dir-root", "fit", ["--config", CONFIG, *_sets(["run.runs_dir=/", f"run.name={OUTSIDE[1:]}",
                                                                 "data.cache_dir={d}/data"])], 2,
         r"run\.runs_dir: expected", "data loss", outside=(OUTSIDE,)),
    Case("fit-runs-dir-is-a-file", "fit", ["--config", CONFIG, *_sets(["run.runs_dir={d}/notes.txt",
                                                                      "data.cache_dir={d}/data"])], 2,
         r"notes\.txt is a file, not a folder", "traceback", setup=NOTES),
    Case("fit-cache-dir-under-a-file", "fit", ["--config", CONFIG, *_sets(["run.runs_dir={d}/runs",
                                                                          "data.cache_dir={d}/notes.txt/data"])], 2,
         r"data\.cache_dir .*is a file, not a folder", "traceback", setup=NOTES),
    Case("fit-config-not-utf8", "fit", ["--config", "{d}/latin1.toml", *_sets(["run.runs_dir={d}/runs"])], 2,
         r"not UTF-8 text", "traceback", setup=_mk(files={"latin1.toml": b'[run]\nname = "caf\xe9"\n'})),
    Case("fit-config-bom", "fit", ["--config", "{d}/bom.toml", *_sets(["run.runs_dir={d}/runs"])], 2,
         r"unknown key optim\.lr_max", "misleading",
         setup=_mk(files={"bom.toml": b"\xef\xbb\xbf[optim]\nlr_max = 3\n"})),
    Case("fit-config-is-a-folder", "fit", ["--config", "{d}/configs"], 2, r"is a directory", "misleading",
         setup=_mk("configs")),
    Case("fit-n-train-1e7", "fit", ["--config", CONFIG, *_sets(["run.runs_dir={d}/runs", "data.cache_dir={d}/data",
                                                               "data.n_train=10000000"])], 2,
         r"data\.n_train: the dataset .* takes 1\.29 TB.*--allow-large", "unbounded"),
    Case("fit-optim-steps-1e8", "fit", ["--config", CONFIG, *_sets(["run.runs_dir={d}/runs", "data.cache_dir={d}/data",
                                                                   "optim.steps=100000000"])], 2,
         r"optim\.steps: expected at most", "unbounded"),
    Case("fit-dataset-does-not-fit-on-disk", "fit", ["--config", CONFIG, *_sets(
        ["run.runs_dir={d}/runs", "data.cache_dir={d}/data"])], 2, r"has only 10 MB free", "unbounded",
         patch=lambda mp, d: mp.setattr(shutil, "disk_usage", _disk_usage_tiny)),
    Case("fit-disk-full-while-writing", "fit", ["--config", CONFIG, *_sets(
        ["run.runs_dir={d}/runs", "run.name=full", "data.cache_dir={d}/data"])], 2, r"the disk is full", "traceback",
         patch=lambda mp, d: mp.setattr("proxies.files.atomic_write_bytes",
                                        _raise(OSError(errno.ENOSPC, "No space left on device",
                                                       str(d / "runs" / "full" / "config.json"))))),
    Case("fit-resume-with-another-config", "fit", ["--config", CONFIG, *_sets(
        ["run.runs_dir={d}/runs", "run.name=run", "data.cache_dir={d}/data", *TINY, "model.hidden=64"])], 2,
         r"holds a run with a different config .*model\.hidden", "traceback", setup=lambda d, c: fake_run(d / "runs")),
    Case("fit-damaged-run-config", "fit", ["--config", CONFIG, *_sets(
        ["run.runs_dir={d}/runs", "run.name=run", "data.cache_dir={d}/data"])], 2, r"config\.json is damaged",
         "traceback", setup=lambda d, c: (fake_run(d / "runs") / "config.json").write_text("{not json")),
    Case("fit-both-checkpoints-damaged", "fit", tiny_fit_argv("{d}/runs", "{cache}"), 2,
         r"best checkpoint .* is damaged.*--fresh", "traceback", real=True,
         setup=lambda d, c: [damage(run, w)
                             for run in [copy_run(c, d / "runs" / "tiny", runs_dir=str(d / "runs"))]
                             for w in ("latest", "best")]),
    Case("fit-checkpoint-does-not-fit-the-model", "fit",
         tiny_fit_argv("{d}/runs", "{cache}", "tiny", "model.hidden=24"), 2, r"does not fit the model", "traceback",
         real=True,
         setup=lambda d, c: copy_run(c, d / "runs" / "tiny", runs_dir=str(d / "runs"),
                                     edit=lambda cfg: cfg["model"].update(hidden=24))),
    Case("fit-latest-damaged-resumes-from-best", "fit", tiny_fit_argv("{d}/runs", "{cache}"), 0,
         r"resuming from the best checkpoint", "traceback", real=True, changes=True,
         setup=lambda d, c: damage(copy_run(c, d / "runs" / "tiny", runs_dir=str(d / "runs")), "latest")),
    Case("fit-bad-override", "fit", ["--config", CONFIG, "--set", "optim.lr"], 2, r"expected section\.key=value",
         "misleading"),
    # -------------------------------------------------------------------- training.match
    Case("match-two-samples", "match", ["{d}/two.wav", "--run", "{tiny}", "--out", "{d}/p.amSynth"], 2,
         r"at least 20 ms long.*got 2 sample", "wrong success", setup=lambda d, c: tone(d / "two.wav", n=2)),
    Case("match-rate-1-hz", "match", ["{d}/slow.wav", "--run", "{tiny}", "--out", "{d}/p.amSynth"], 2,
         r"sample rate that instruments use .*got 1 Hz", "wrong success",
         setup=lambda d, c: tone(d / "slow.wav", sr=1, n=100)),
    Case("match-rate-500-khz", "match", ["{d}/fast.wav", "--run", "{tiny}", "--out", "{d}/p.amSynth"], 2,
         r"got 500000 Hz", "wrong success", setup=lambda d, c: tone(d / "fast.wav", sr=500000, seconds=0.2)),
    Case("match-dc-only", "match", ["{d}/dc.wav", "--run", "{tiny}", "--out", "{d}/p.amSynth"], 2,
         r"energy above 10 Hz, got a DC offset", "wrong success",
         setup=lambda d, c: tone(d / "dc.wav", amp=0.0, dc=0.5)),
    Case("match-peaks-1e30", "match", ["{d}/huge.wav", "--run", "{tiny}", "--out", "{d}/p.amSynth"], 2,
         r"full scale.*got peaks of \d(\.\d+)?e\+29", "wrong success",
         setup=lambda d, c: tone(d / "huge.wav", amp=3e29, subtype="FLOAT")),
    Case("match-search-renders-1e9", "match", ["{d}/tone.wav", "--run", "{tiny}", "--out", "{d}/p.amSynth",
                                               "--search-renders", "1000000000"], 2,
         r"--search-renders: expected at most 20,000", "unbounded", setup=TONE),
    Case("match-refine-steps-1e8", "match", ["{d}/tone.wav", "--run", "{tiny}", "--out", "{d}/p.amSynth",
                                             "--refine-steps", "100000000"], 2,
         r"--refine-steps: expected at most 10,000", "unbounded", setup=TONE),
    Case("match-out-readonly", "match", ["{d}/tone.wav", "--run", "{tiny}", "--out", "/proc/p.amSynth"], 2,
         r"cannot write in /proc", "work lost", setup=TONE),
    Case("match-out-under-file", "match", ["{d}/tone.wav", "--run", "{tiny}", "--out", "{d}/notes.txt/p.amSynth"], 2,
         r"notes\.txt is a file, not a folder", "work lost", setup=_both(TONE, NOTES)),
    Case("match-out-long-name", "match", ["{d}/tone.wav", "--run", "{tiny}", "--out", f"{{d}}/{LONG}.amSynth"], 2,
         r"allows 255", "work lost", setup=TONE),
    Case("match-companion-is-a-folder", "match", ["{d}/tone.wav", "--run", "{tiny}", "--out", "{d}/p.amSynth"], 2,
         r"p\.json is a folder", "work lost", setup=_both(TONE, _mk("p.json"))),
    Case("match-synth-unknown", "match", ["{d}/tone.wav", "--synth", "moog", "--out", "{d}/p.amSynth"], 2,
         r"--synth: expected a synth with a shipped model, got 'moog'.*shipped: amsynth", "misleading", setup=TONE),
    Case("match-synth-without-a-shipped-model", "match", ["{d}/tone.wav", "--synth", "nekobi", "--out",
                                                          "{d}/p.fxp"], 2,
         r"no shipped model for 'nekobi'.*Fix: pass --run runs/<name>", "misleading", setup=TONE),
    Case("match-run-and-synth", "match", ["{d}/tone.wav", "--run", "{tiny}", "--synth", "amsynth", "--out",
                                          "{d}/p.amSynth"], 2, r"--run/--synth: expected one of them", "misleading",
         setup=TONE),
    Case("match-neither-run-nor-synth", "match", ["{d}/tone.wav", "--out", "{d}/p.amSynth"], 2,
         r"--synth: expected the synth to match with.*e\.g\. --synth amsynth", "misleading", setup=TONE),
    Case("match-hold-nan", "match", ["{d}/tone.wav", "--synth", "amsynth", "--out", "{d}/p.amSynth", "--hold", "nan"],
         2, r"--hold: expected a number in \(0, 600\], got 'nan'", "misleading", setup=TONE),
    Case("match-max-seconds-huge", "match", ["{d}/tone.wav", "--synth", "amsynth", "--out", "{d}/p.amSynth",
                                             "--max-seconds", "1e9"], 2, r"--max-seconds: expected a number in \(0, 60\]",
         "unbounded", setup=TONE),
    Case("match-folder-out-is-a-file", "match", ["{d}/sounds", "--synth", "amsynth", "--out", "{d}/notes.txt"], 2,
         r"--out: expected an output folder for a folder of sounds", "work lost",
         setup=_both(_mk("sounds"), _mk(files={"notes.txt": b"keep me"}))),
    Case("match-workers-0", "match", ["{d}/tone.wav", "--run", "{tiny}", "--out", "{d}/p.amSynth", "--workers", "0"],
         2, r"--workers: expected an integer in 1\.\.256", "misleading", setup=TONE),
    Case("match-target-is-a-folder", "match", ["{d}/sounds", "--run", "{tiny}", "--out", "{d}/p.amSynth"], 2,
         r"--out: expected an output folder for a folder of sounds, got .*p\.amSynth.*fix: e\.g\. --out",
         "misleading", setup=_mk("sounds")),
    Case("match-folder-without-sounds", "match", ["{d}/sounds", "--run", "{tiny}", "--out", "{d}/matched"], 2,
         r"expected .*audio file", "misleading", setup=_mk("sounds")),
    Case("match-run-config-not-json", "match", ["{d}/tone.wav", "--run", "{d}/run", "--out", "{d}/p.amSynth"], 2,
         r"config\.json", "misleading",
         setup=_both(TONE, lambda d, c: (fake_run(d) / "config.json").write_text("{oops"))),
    Case("match-run-config-not-utf8", "match", ["{d}/tone.wav", "--run", "{d}/run", "--out", "{d}/p.amSynth"], 2,
         r"config\.json", "misleading",
         setup=_both(TONE, lambda d, c: (fake_run(d) / "config.json").write_bytes(b'{"run": "\xe9"}'))),
    Case("match-run-without-step-checkpoint", "match", ["{d}/tone.wav", "--run", "{d}/run", "--out", "{d}/p.amSynth"],
         2, r"a folder without a numbered step checkpoint", "traceback",
         setup=_both(TONE, lambda d, c: [shutil.rmtree(fake_run(d) / "checkpoints" / "best" / "6"),
                                         (d / "run" / "checkpoints" / "best" / "notes.txt").write_text("x")])),
    Case("match-damaged-checkpoint", "match", ["{d}/tone.wav", "--run", "{d}/run", "--out", "{d}/p.amSynth"], 2,
         r"best checkpoint .* is damaged.*--checkpoint latest", "traceback",
         setup=_both(TONE, lambda d, c: damage(copy_run(c, d / "run"), "best"))),
    Case("match-checkpoint-does-not-fit", "match", ["{d}/tone.wav", "--run", "{d}/run", "--out", "{d}/p.amSynth"], 2,
         r"does not fit the model", "traceback",
         setup=_both(TONE, lambda d, c: copy_run(c, d / "run", edit=lambda cfg: cfg["model"].update(hidden=24)))),
    Case("match-late-failure-keeps-the-previous-set", "match", ["{d}/tone.wav", "--run", "{tiny}", "--out",
                                                                "{d}/p.amSynth", "--note", "60", "--quality", "fast"],
         1, r"unexpected error: RuntimeError: the figure failed.*the traceback is in", "work lost", real=True,
         setup=_both(TONE, lambda d, c: old_set(d, "p", (".amSynth", ".fxp", ".wav", ".png", ".json"))),
         patch=lambda mp, d: mp.setattr("training.report.spectrogram_png", _raise(RuntimeError("the figure failed")))),
    # -------------------------------------------------------------------- training.ship
    Case("ship-unknown-key", "ship", ["--config", CONFIG, "--set", "model.heads=3"], 2,
         r"unknown key model\.heads; expected one of", "misleading"),
    Case("ship-out-under-a-file", "ship", ["--out", "{d}/notes.txt/models", "--config", CONFIG], 2,
         r"--out.*notes\.txt", "work lost", setup=_mk(files={"notes.txt": b"keep me"})),
    # -------------------------------------------------------------------- training.evaluate
    Case("evaluate-json-under-file", "evaluate", ["--run", "{tiny}", "--targets", "random", "--json",
                                                  "{d}/notes.txt/e.json"], 2, r"is a file, not a folder", "work lost",
         setup=NOTES),
    Case("evaluate-json-long-name", "evaluate", ["--run", "{tiny}", "--targets", "random", "--json",
                                                 f"{{d}}/{LONG}.json"], 2, r"allows 255", "work lost"),
    Case("evaluate-json-readonly", "evaluate", ["--run", "{tiny}", "--targets", "random", "--json", "/proc/e.json"],
         2, r"cannot write in /proc", "work lost"),
    Case("evaluate-markdown-is-a-folder", "evaluate", ["--run", "{tiny}", "--targets", "random", "--json",
                                                       "{d}/e.json"], 2, r"e\.md is a folder", "work lost",
         setup=_mk("e.md")),
    Case("evaluate-cma-renders-1e9", "evaluate", ["--run", "{tiny}", "--targets", "random", "--json", "{d}/e.json",
                                                  "--cma-renders", "1000000000"], 2,
         r"--cma-renders: expected at most 100,000", "unbounded"),
    Case("evaluate-search-renders-1e9", "evaluate", ["--run", "{tiny}", "--targets", "random", "--json", "{d}/e.json",
                                                     "--search-renders", "1000000000"], 2,
         r"--search-renders: expected at most 20,000", "unbounded"),
    Case("evaluate-refine-steps-1e8", "evaluate", ["--run", "{tiny}", "--targets", "random", "--json", "{d}/e.json",
                                                   "--refine-steps", "100000000"], 2,
         r"--refine-steps: expected at most 10,000", "unbounded"),
    Case("evaluate-proxy-refine-steps-negative", "evaluate", ["--run", "{tiny}", "--targets", "random", "--json",
                                                             "{d}/e.json", "--proxy-refine-steps", "-3"], 2,
         r"--proxy-refine-steps: expected an integer in 0\.\.4096", "unbounded"),
    Case("evaluate-folder-without-audio", "evaluate", ["--run", "{tiny}", "--targets", "{d}/sounds", "--json",
                                                       "{d}/e.json"], 2, r"--targets: expected a folder holding audio",
         "work lost", setup=_mk("sounds", files={"sounds/readme.txt": b"no audio here"})),
    Case("evaluate-param-run-not-a-run", "evaluate", ["--run", "{tiny}", "--targets", "random", "--json", "{d}/e.json",
                                                      "--param-run", "{d}/photos"], 2,
         r"--param-run: expected a run directory", "misleading", setup=PHOTOS),
    Case("evaluate-damaged-checkpoint", "evaluate", ["--run", "{d}/run", "--targets", "random", "--n", "1", "--json",
                                                     "{d}/e.json"], 2, r"best checkpoint .* is damaged", "traceback",
         setup=lambda d, c: damage(copy_run(c, d / "run"), "best")),
    Case("evaluate-late-failure-keeps-the-previous-reports", "evaluate", [
        "--run", "{tiny}", "--targets", "random", "--n", "1", "--json", "{d}/e.json", "--refine-steps", "0",
        "--search-renders", "0", "--cma-renders", "0", "--proxy-search-rounds", "0", "--no-dataset", "--examples", "0"],
        1, r"unexpected error: RuntimeError: markdown failed.*the traceback is in", "work lost", real=True,
        setup=lambda d, c: old_set(d, "e", (".json", ".md", ".html")),
        patch=lambda mp, d: mp.setattr("training.report.markdown", _raise(RuntimeError("markdown failed")))),
]


# ------------------------------------------------------------------------------ the runner
class HeavyWork(Exception):
    """A tripwire: the CLI started the heavy work that bad input must never reach."""


def _tripwire(what: str) -> Callable[..., Any]:
    def f(*a: Any, **k: Any) -> Any:
        raise HeavyWork(what)
    return f


def snapshot(root: Path) -> dict[str, str]:
    """Every path under ``root``: 'dir', 'link -> target' or the SHA-1 of the file's bytes."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = f"link -> {os.readlink(p)}"
            elif p.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = hashlib.sha1(p.read_bytes()).hexdigest()
    return out


def _diff(before: dict[str, str], after: dict[str, str]) -> str:
    new = sorted(set(after) - set(before))
    gone = sorted(set(before) - set(after))
    changed = sorted(k for k in set(before) & set(after) if before[k] != after[k])
    parts = [f"{label}: {', '.join(x[:60] for x in xs[:4])}{' ...' if len(xs) > 4 else ''}"
             for label, xs in (("left behind", new), ("deleted", gone), ("changed", changed)) if xs]
    return "; ".join(parts)


def run_case(case: Case, tmp: Path, ctx: Ctx, monkeypatch: pytest.MonkeyPatch, capsys) -> list[str]:
    """Run one case; the list of what went wrong (empty: it behaved)."""
    d = tmp / "case"
    d.mkdir()
    logs = tmp / "logs"
    monkeypatch.setenv("SYNTHPROG_LOG_DIR", str(logs))
    if case.setup is not None:
        case.setup(d, ctx)
    subs = {"d": str(d), "cache": ctx.cache}
    if any("{tiny}" in a for a in case.argv):
        subs["tiny"] = str(ctx.tiny)
    argv = [a.format(**subs) for a in case.argv]
    shared = Path(subs["tiny"]) if "tiny" in subs else None
    before, shared_before = snapshot(d), snapshot(shared) if shared else None
    monkeypatch.chdir(d)
    main = importlib.import_module(MAINS[case.cli]).main
    if not case.real:
        import proxies.fidelity
        import proxies.probe
        import training.search
        import training.train

        monkeypatch.setattr(training.train, "build_dataset", _tripwire("rendering the dataset"))
        monkeypatch.setattr(training.search, "NoteRenderer", _tripwire("starting the render pool"))
        monkeypatch.setattr(proxies.fidelity, "_Engines", _tripwire("opening the fidelity engines"))
        monkeypatch.setattr(proxies.probe, "probe", _tripwire("probing the plugin"))
    if case.patch is not None:
        case.patch(monkeypatch, d)
    capsys.readouterr()
    problems: list[str] = []
    rc: Any = None
    try:
        rc = main(argv)
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if isinstance(e.code, str):
            print(e.code, file=__import__("sys").stderr)
    except HeavyWork as e:
        problems.append(f"started heavy work ({e}) instead of refusing")
    except BaseException as e:  # noqa: BLE001
        first = (str(e).strip().splitlines() or [""])[0][:100]
        problems.append(f"traceback ({type(e).__name__}: {first})")
    finally:
        monkeypatch.undo()
    out, err = capsys.readouterr()
    text = out + err
    if rc is not None and rc != case.code:
        problems.append("exit 0 (wrong success)" if rc == 0 else f"exit {rc}, expected {case.code}")
    if "Traceback (most recent call last)" in err:
        problems.append("printed a traceback")
    if rc is not None and not re.search(case.phrase, text, re.S):
        last = (err.strip().splitlines() or out.strip().splitlines() or [""])[-1][:160]
        problems.append(f"message lacks /{case.phrase}/ (said: {last!r})")
    if rc == 2 == case.code and len(re.findall(r"(?m)error: ", err)) != 1:
        problems.append(f"{len(re.findall(r'(?m)error: ', err))} 'error:' lines instead of one")
    crash_logs = sorted(logs.glob("*.log")) if logs.is_dir() else []
    if case.code == 2 and crash_logs:
        problems.append("logged a user error as a crash")
    if case.code == 1 and rc == 1 and not any(str(p) in err for p in crash_logs):
        problems.append("no crash log named in the message")
    if not case.changes:
        change = _diff(before, snapshot(d))
        if change:
            problems.append(change)
    if shared is not None and snapshot(shared) != shared_before:
        problems.append(f"changed the shared run: {_diff(shared_before, snapshot(shared))}")
    for p in case.outside:
        if os.path.lexists(p):
            problems.append(f"created {p}")
            shutil.rmtree(p, ignore_errors=True)
    return problems


@pytest.mark.plugin
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, ctx: Ctx, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    problems = run_case(case, tmp_path, ctx, monkeypatch, capsys)
    report = os.environ.get("CLI_BAD_INPUTS_REPORT")
    if report:
        with open(report, "a") as f:
            f.write(json.dumps({"id": case.id, "cli": case.cli, "cls": case.cls, "problems": problems}) + "\n")
    assert not problems, f"{case.id}: " + " | ".join(problems)


def test_the_table_is_large_and_covers_every_cli() -> None:
    assert len(CASES) >= 60 and len({c.id for c in CASES}) == len(CASES)
    assert {c.cli for c in CASES} == set(MAINS)
    assert {"dexed", "nekobi"} <= {c.argv[0] for c in CASES if c.cli == "render"}
    assert any(c.argv[0].startswith("vst:") for c in CASES if c.cli == "render")


# ------------------------------------------------------------------------------ the pieces
def test_output_set_is_all_or_nothing(tmp_path: Path) -> None:
    from proxies.files import OutputSet

    (tmp_path / "a.json").write_text("old a")
    with pytest.raises(RuntimeError):
        with OutputSet() as out:
            out.write_text(tmp_path / "a.json", "new a")
            out.write_text(tmp_path / "sub" / "b.txt", "new b")
            raise RuntimeError("late failure")
    assert snapshot(tmp_path) == {"a.json": hashlib.sha1(b"old a").hexdigest()}
    with OutputSet() as out:
        out.write_json(tmp_path / "a.json", {"x": float("nan"), "y": [np.float32(np.inf), 1.5]})
        out.write_text(tmp_path / "sub" / "b.txt", "new b")
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": None, "y": [None, 1.5]}
    assert (tmp_path / "sub" / "b.txt").read_text() == "new b"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "sub"]


def test_fresh_deletes_only_runs(tmp_path: Path) -> None:
    from training.config import ConfigError
    from training.train import reset_run

    mine = fake_run(tmp_path, "mine")
    legacy = fake_run(tmp_path, "legacy", marker=False)
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.jpg").write_bytes(b"x")
    reset_run(mine)
    reset_run(legacy)
    assert not mine.exists() and not legacy.exists()
    with pytest.raises(ConfigError, match="refusing to delete"):
        reset_run(tmp_path / "photos")
    assert (tmp_path / "photos" / "a.jpg").is_file()
    reset_run(tmp_path / "nothing-here")  # nothing to delete
