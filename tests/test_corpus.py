"""The cached corpus renders: reuse (on disk and in memory), resume, corrupt files, failures, and the search."""

from __future__ import annotations

import numpy as np
import pytest

import training.corpus as corpus_mod
from proxies.notes import Note
from tests.test_data import fail_second_render
from training.corpus import best_in_corpus_by_mss, corpus_renders

SR, DUR, HOLD = 16000, 1.0, 0.5
pytestmark = pytest.mark.plugin


def render_subset(cache, limit=40, logs=None, **kw):
    return corpus_renders("amsynth", 60, 100, SR, DUR, HOLD, cache_dir=cache, workers=2, progress=False,
                          log=(logs.append if logs is not None else (lambda m: None)), limit=limit, **kw)


def no_engine(monkeypatch):
    def refuse(self):
        raise AssertionError("the engine was opened: the cache was not reused")

    monkeypatch.setattr(corpus_mod.EngineRenderer, "__enter__", refuse)


@pytest.fixture(scope="module")
def cached(tmp_path_factory, amsynth_path):
    cache = tmp_path_factory.mktemp("corpus")
    return cache, render_subset(cache)


def test_renders_the_first_presets_once_and_reuses_the_file(cached, monkeypatch):
    cache, c = cached
    from proxies.synth import get_synth

    names, normalized = get_synth("amsynth").presets.corpus()
    assert c.names == list(names[:40]) and not c.failed
    assert np.array_equal(c.normalized, np.asarray(normalized[:40])) and np.array_equal(c.index, np.arange(40))
    assert c.audio.shape == (40, 2, SR) and c.audio.dtype == np.float16 and c.note == 60 and c.sample_rate == SR
    assert np.all(np.abs(c.audio.astype(np.float32)).reshape(40, -1).max(axis=1) > 1e-4)  # every preset sounds
    assert c.path.parent == cache and c.path.name.startswith("corpus-amsynth-") and c.path.suffix == ".npz"
    assert not list(cache.glob("*.parts")) and not list(cache.glob(".*"))  # parts merged, no temporaries
    no_engine(monkeypatch)
    again = render_subset(cache)
    assert again.path == c.path and again.names == c.names and np.array_equal(again.audio, c.audio)
    # other settings are another file
    with pytest.raises(AssertionError, match="engine was opened"):
        corpus_renders("amsynth", 61, 100, SR, DUR, HOLD, cache_dir=cache, progress=False, log=lambda m: None,
                       limit=40)


def test_a_second_call_in_the_process_does_not_read_the_file_again(cached, monkeypatch):
    import os

    cache, c = cached
    corpus_mod._IN_MEMORY.clear()  # as in a new process
    real_load, loads = np.load, []

    def counting_load(*a, **k):
        loads.append(a[0])
        return real_load(*a, **k)

    monkeypatch.setattr(np, "load", counting_load)
    first = render_subset(cache)
    assert loads == [c.path] and np.array_equal(first.audio, c.audio)
    no_engine(monkeypatch)
    monkeypatch.setattr(corpus_mod, "factory_presets", lambda *a: pytest.fail("the presets were read again"))
    again = render_subset(cache)
    assert loads == [c.path]  # from memory: no file read, no preset hashed
    assert again.audio is first.audio and again.normalized is first.normalized and again.names == first.names
    assert not again.audio.flags.writeable  # shared by every call: nobody may change it
    monkeypatch.undo()

    st = c.path.stat()
    os.utime(c.path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # the file changed: read again
    monkeypatch.setattr(np, "load", counting_load)
    loads.clear()
    third = render_subset(cache)
    assert loads == [c.path] and third.audio is not first.audio and np.array_equal(third.audio, c.audio)


def test_a_render_of_preset_7_finds_preset_7(cached):
    from proxies.host import render

    _, c = cached
    target = render("amsynth", c.normalized[7], notes=(Note(60, 100, 0.0, HOLD),), duration_s=DUR, sample_rate=SR)
    best, mss = best_in_corpus_by_mss(c, target, SR)
    assert best == 7 and mss.shape == (40,)
    others = np.delete(mss, 7)
    assert mss[7] < 0.05 and mss[7] < 0.25 * others.min()  # float16 storage only: ~0.015, next ~0.18
    assert best_in_corpus_by_mss(c, target[:1], SR)[0] == 7  # a mono target is spread over the channels
    with pytest.raises(ValueError, match=r"expected \[2, 16000\]"):
        best_in_corpus_by_mss(c, target[:, :8000], SR)
    with pytest.raises(ValueError, match="rendered at 16000 Hz"):
        best_in_corpus_by_mss(c, target, 44100)


def test_a_corrupt_cache_file_is_rendered_again(tmp_path):
    c = render_subset(tmp_path, limit=6)
    c.path.write_bytes(c.path.read_bytes()[:1000])  # truncated
    logs: list[str] = []
    again = render_subset(tmp_path, limit=6, logs=logs)
    assert any("rendering it again" in m for m in logs) and any("rendering 6 of 6" in m for m in logs)
    assert again.names == c.names and np.array_equal(again.normalized, c.normalized)
    assert again.audio.shape == c.audio.shape


def test_a_killed_run_keeps_its_finished_parts(tmp_path, monkeypatch):
    monkeypatch.setattr(corpus_mod, "PART_SIZE", 4)
    real = corpus_mod._render_chunks
    calls = []

    def dies_on_second_part(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # as if killed while rendering the second part
        return real(*a, **k)

    monkeypatch.setattr(corpus_mod, "_render_chunks", dies_on_second_part)
    with pytest.raises(KeyboardInterrupt):
        render_subset(tmp_path, limit=10)
    parts = sorted(p.name for p in tmp_path.glob("*.parts/part-*.npz"))
    assert parts == ["part-0000.npz"]
    monkeypatch.setattr(corpus_mod, "_render_chunks", real)
    logs: list[str] = []
    c = render_subset(tmp_path, limit=10, logs=logs)
    assert any("rendering 6 of 10" in m for m in logs), logs  # the first part was kept
    assert len(c.names) == 10 and np.array_equal(c.index, np.arange(10))


def test_failed_renders_are_dropped_and_named(tmp_path, monkeypatch):
    fail_second_render(monkeypatch)
    logs: list[str] = []
    c = render_subset(tmp_path, limit=5, logs=logs)
    from proxies.synth import get_synth

    names = get_synth("amsynth").presets.corpus()[0]
    assert c.failed == [names[1]] and names[1] not in c.names and c.index.tolist() == [0, 2, 3, 4]
    assert any("failed to render and are dropped" in m and names[1] in m for m in logs)
    assert np.all(np.isfinite(c.audio.astype(np.float32)))
    monkeypatch.undo()
    no_engine(monkeypatch)
    assert render_subset(tmp_path, limit=5).failed == [names[1]]  # kept with its failure, not re-rendered
