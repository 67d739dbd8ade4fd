"""Dexed / DX7 behind the synth seam: the one record the rest of the library knows it by.

Nothing here imports JAX or dexed-py: the engine is imported by ``SYNTH.open_engine``, the
proxy by ``SYNTH.proxy()`` (:func:`proxies.dexed.calibration.load_proxy`). The spec and the
preset code are NumPy only.
"""

from __future__ import annotations

import numpy as np

from proxies.dexed.presets import PresetError
from proxies.dexed.spec import DEXED, sample
from proxies.synth import Engine, NoteConvention, PresetFormats, Proxy, Synth

__all__ = ["SPECTRAL_PARAMS", "SYNTH"]

#: What the spectral loss trains by default: the operators' output levels, envelope rates and
#: levels and the feedback amount. These move loudness, brightness and the time course smoothly
#: through the proxy; the frequency parameters (coarse, fine, detune, fixed mode, transpose),
#: the algorithm and the other categoricals change the sound discontinuously or periodically and
#: learn from the parameter loss only.
SPECTRAL_PARAMS: tuple[str, ...] = tuple(
    f"op{op}_{field}"
    for op in range(1, 7)
    for field in ("output_level", "eg_rate1", "eg_rate2", "eg_rate3", "eg_rate4", "eg_level1", "eg_level2",
                  "eg_level3", "eg_level4")
) + ("feedback",)


def _open_engine(sample_rate: int, workers: int = 2, **options) -> Engine:
    from proxies.dexed.engine import open_engine  # noqa: PLC0415  (imports dexed-py)

    return open_engine(sample_rate, workers=workers, **options)


def _read(path: str, index: int | None = None) -> tuple[str, np.ndarray]:
    from proxies.dexed.presets import read_preset  # noqa: PLC0415

    return read_preset(path, index)


def _read_all(path: str) -> list[tuple[str, np.ndarray]]:
    from proxies.dexed.presets import read_voices  # noqa: PLC0415

    return [(v.name.rstrip(" "), v.normalized) for v in read_voices(path)]


def _write(path: str, name: str, normalized: np.ndarray) -> list[str]:
    """PATH.syx (a 32-voice bank, the voice in slot 0) and PATH.voice.syx (163-byte single voice)."""
    from proxies.dexed.presets import write_preset  # noqa: PLC0415

    return write_preset(path, name, normalized)


def _corpus() -> tuple[list[str], np.ndarray]:
    from proxies.dexed.presets import hexter_corpus  # noqa: PLC0415

    return hexter_corpus("all")


def _algorithm_of(normalized: np.ndarray) -> np.ndarray:
    """The fidelity report's per-group rows: one per DX7 algorithm (``"algorithm 1".."32"``)."""
    choice = DEXED.category_of(np.asarray(normalized, np.float64))[..., DEXED.index_of("algorithm")]
    return np.asarray([f"algorithm {int(c) + 1}" for c in np.ravel(choice)])


def _load_proxy() -> Proxy:
    from proxies.dexed.calibration import load_proxy  # noqa: PLC0415  (imports JAX)

    return load_proxy()


SYNTH = Synth(
    name="dexed",
    spec=DEXED,
    channels=1,
    open_engine=_open_engine,
    presets=PresetFormats(
        suffixes=(".syx", ".dx7", ".bin", ".vmem"),
        read=_read,
        read_all=_read_all,
        write=_write,
        write_suffix=".syx",
        corpus=_corpus,
        error=PresetError,  # a ValueError
    ),
    notes=NoteConvention(note_off_quantum=64, note_off_rounding="ceil"),
    proxy=_load_proxy,
    sample=sample,
    spectral_params=SPECTRAL_PARAMS,
    group_of=_algorithm_of,
    description="Dexed / DX7 FM (PyPI dexed-py 0.3.0, in-process): 155 VCED voice values, .syx banks, "
                "432 hexter voices (128 DX7 ROM held out)",
    install_hint="pip install dexed-py==0.3.0; sudo apt-get install hexter",
)
