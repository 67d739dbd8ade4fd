"""Matching a folder of sounds: which files are matched and which are done (so an interrupted
folder resumes), and the gallery page, checked as a browser sees it: headless Chromium loads the
page, its relative images and audio, and a screenshot of it is not blank."""

from __future__ import annotations

import json
import urllib.parse
from html.parser import HTMLParser

import numpy as np
import pytest
import soundfile as sf

from tests.chromium import PROBE, dump_probed_dom, run_chromium
from training import gallery, report
from training.cli import MatchError

SR = 8000
SUFFIX = ".amSynth"
ODD = 'a<b>&"c.wav'  # a name every page must escape and every link must quote


def _tone(seconds: float, hz: float, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    x = (0.3 * np.sin(2 * np.pi * hz * t) * np.exp(-2 * t)).astype(np.float32)
    return np.stack([x] * channels, axis=1)  # [T, channels] as soundfile writes


def _fake_match(item: gallery.FolderItem, mss: float, seconds: float, nested: bool = True) -> None:
    """What training.match writes for one sound: preset, .fxp, float wav, png, json."""
    item.preset.parent.mkdir(parents=True, exist_ok=True)
    item.preset.write_text("amSynth1.0preset\n<preset> <name> x\n")
    item.preset.with_suffix(".fxp").write_bytes(b"CcnK")
    audio = _tone(0.5, 330.0, 2)
    sf.write(item.wav, audio, SR, subtype="FLOAT")
    item.png.write_bytes(report.spectrogram_png([("target", audio.T), ("render", audio.T)], SR, title=item.source.name))

    def m(v):
        d = {"mss": v, "logmel_l1": 10 * v, "mfcc_l1": 20 * v}
        return {"metrics": d} if nested else d

    stages = [{"name": "model", **m(mss + 0.4), "renders": 1, "seconds": 0.2, "improved": True},
              {"name": "refine", **m(mss + 0.1), "renders": 8, "seconds": seconds / 3, "improved": True},
              {"name": "search", **m(mss), "renders": 200, "seconds": seconds / 2, "improved": True}]
    rep = {"target": {"path": str(item.source)}, "note": 57, "stages": stages, "final": m(mss),
           "timing": {"total_s": seconds},
           "files": {"preset": str(item.preset), "fxp": str(item.preset.with_suffix(".fxp")),
                     "wav": str(item.wav), "png": str(item.png), "json": str(item.report)}}
    item.report.write_text(json.dumps(rep))


@pytest.fixture
def folder(tmp_path):
    """DIR with five sounds (one an aiff browsers do not play, one with an odd name, two in a
    subfolder), hidden and non-audio files, and the output folder inside it."""
    d = tmp_path / "sounds"
    (d / "sub" / "deeper").mkdir(parents=True)
    (d / ".git").mkdir()
    sf.write(d / ODD, _tone(0.4, 220), SR)
    sf.write(d / "b.flac", _tone(0.3, 440), SR)
    sf.write(d / "c.aiff", _tone(12.0, 110), SR)  # longer than the embedded 10 s
    sf.write(d / "sub" / "d.WAV", _tone(0.3, 550, 2), SR, subtype="PCM_24")
    sf.write(d / "sub" / "deeper" / "e.wav", _tone(0.3, 660), SR)
    sf.write(d / ".hidden.wav", _tone(0.1, 220), SR)
    sf.write(d / "._b.wav", _tone(0.1, 220), SR)  # macOS AppleDouble companion
    sf.write(d / ".git" / "f.wav", _tone(0.1, 220), SR)
    (d / "readme.txt").write_text("not a sound")
    return d, d / "matches"


def _names(items, d):
    return [it.source.relative_to(d).as_posix() for it in items]


def test_plan_folder_finds_sounds_and_what_is_done(folder):
    d, out = folder
    items = gallery.plan_folder(d, out, SUFFIX)
    assert _names(items, d) == [ODD, "b.flac", "c.aiff", "sub/d.WAV", "sub/deeper/e.wav"]
    assert not any(it.done for it in items) and all(it.error is None for it in items)
    assert items[3].preset == out / "sub" / "d.amSynth" and items[3].report == out / "sub" / "d.json"
    assert items[0].preset == out / ('a<b>&"c' + SUFFIX)

    _fake_match(items[0], 0.5, 30.0)
    _fake_match(items[1], 0.9, 50.0, nested=False)  # the flat report shape is read too
    _fake_match(items[3], 1.3, 10.0)
    _fake_match(items[4], 2.0, 20.0)
    text = items[4].report.read_text()
    items[4].report.write_text(text[: len(text) // 2])  # interrupted while writing the report
    items = gallery.plan_folder(d, out, SUFFIX)
    # the outputs (wav among them) inside DIR/matches are not taken for targets
    assert _names(items, d) == [ODD, "b.flac", "c.aiff", "sub/d.WAV", "sub/deeper/e.wav"]
    assert [it.done for it in items] == [True, True, False, True, False]

    items[3].wav.unlink()  # the report without the render: redone
    assert not gallery.plan_folder(d, out, SUFFIX)[3].done
    _fake_match(items[3], 1.3, 10.0)
    items[0].preset.unlink()  # the report without the preset: redone
    assert not gallery.plan_folder(d, out, SUFFIX)[0].done
    _fake_match(items[0], 0.5, 30.0)
    items[1].report.write_text("[1, 2]")  # JSON, but not a report
    assert not gallery.plan_folder(d, out, SUFFIX)[1].done
    _fake_match(items[1], 0.9, 50.0, nested=False)

    failed = gallery.record_failure(items[2], "target: expected an audio file, got <junk>; fix: re-export it")
    items = gallery.plan_folder(d, out, SUFFIX)
    assert items[2] == failed and not failed.done and failed.error.startswith("target: expected")
    s = gallery.summarise_folder(items)
    assert s == {"n": 5, "done": 3, "failed": 1, "pending": 1, "median_mss": 0.9, "median_seconds": 30.0}
    assert gallery.summary_line(s) == "5 sounds: 3 matched, 1 failed, 1 pending; median MSS 0.9, 30 s per sound"


def test_plan_folder_refuses_what_it_cannot_do(tmp_path):
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "notes.txt").write_text("x")
    sf.write(empty / ".hidden.wav", _tone(0.1, 220), SR)
    with pytest.raises(MatchError, match=r"expected a folder holding audio files .* which holds none; fix:"):
        gallery.plan_folder(empty, tmp_path / "out", SUFFIX)
    with pytest.raises(MatchError, match="does not exist"):
        gallery.plan_folder(tmp_path / "nope", tmp_path / "out", SUFFIX)

    d = tmp_path / "d"
    d.mkdir()
    sf.write(d / "kick.wav", _tone(0.1, 220), SR)
    with pytest.raises(MatchError, match="the target folder itself; fix:"):
        gallery.plan_folder(d, d / ".", SUFFIX)
    (tmp_path / "file").write_text("x")
    with pytest.raises(MatchError, match="an existing file"):
        gallery.plan_folder(d, tmp_path / "file", SUFFIX)
    # DIR inside OUTDIR, and a subfolder of DIR named like DIR: its outputs would become targets
    (d / "d").mkdir()
    sf.write(d / "d" / "x.wav", _tone(0.1, 220), SR)
    with pytest.raises(MatchError, match="inside the target folder"):
        gallery.plan_folder(d, tmp_path, SUFFIX)
    (d / "d" / "x.wav").unlink()
    assert [it.preset for it in gallery.plan_folder(d, tmp_path, SUFFIX)] == [tmp_path / "kick.amSynth"]
    sf.write(d / "kick.flac", _tone(0.1, 220), SR)
    with pytest.raises(MatchError, match="rename or move one"):
        gallery.plan_folder(d, tmp_path / "out", SUFFIX)


class _Page(HTMLParser):
    """Links, images, audio sources, the sounds table's rows, and whether every element closes."""

    VOID = {"meta", "img", "br", "link", "input", "hr", "source"}

    def __init__(self) -> None:
        super().__init__()
        self.links, self.imgs, self.audios, self.rows, self.stack, self.errors = [], [], [], [], [], []
        self._in_row = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag not in self.VOID:
            self.stack.append(tag)
        if tag == "a" and "href" in a:
            self.links.append(a)
        elif tag == "img":
            self.imgs.append(a)
        elif tag == "audio":
            self.audios.append(a)
        elif tag == "tr" and a.get("id", "").startswith("s"):
            self._in_row = []
            self.rows.append(self._in_row)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:]}")
        else:
            self.stack.pop()
        if tag == "tr":
            self._in_row = None

    def handle_data(self, data):
        if self._in_row is not None:
            self._in_row.append(data)


def _done_folder(folder):
    d, out = folder
    items = gallery.plan_folder(d, out, SUFFIX)
    _fake_match(items[0], 0.5, 30.0)
    _fake_match(items[1], 0.9, 50.0)
    _fake_match(items[2], 1.1, 40.0)
    gallery.record_failure(items[3], "target: expected a sound, got <silence> & nothing; fix: louder")
    return d, out, gallery.plan_folder(d, out, SUFFIX)


def test_gallery_page_links_escapes_and_summarises(folder, monkeypatch):
    d, out, items = _done_folder(folder)
    with monkeypatch.context() as m:  # the items hold their parsed reports: the page reads none again
        m.setattr(gallery, "_read_report", lambda path: pytest.fail(f"{path} was read again"))
        page = gallery.write_gallery(out, items, 'Folder <sounds> & "presets"', "amsynth", in_dir=d)
    assert page == out / "index.html"
    text = page.read_text()
    # the same page as from the files on disk
    assert text == gallery.gallery_html(out, [it._replace(parsed=None) for it in items], 'Folder <sounds> & "presets"',
                                        "amsynth", d)
    assert text.startswith("<!DOCTYPE html>") and "http://" not in text and "https://" not in text
    assert 'a&lt;b&gt;&amp;&quot;c.wav' in text and ODD not in text and "a<b>" not in text
    assert "Folder &lt;sounds&gt; &amp; &quot;presets&quot;" in text
    assert "got &lt;silence&gt; &amp; nothing" in text

    p = _Page()
    p.feed(text)
    p.close()
    assert not p.errors and p.stack == [], (p.errors, p.stack)
    rows = ["".join(r) for r in p.rows]
    assert len(rows) == 5
    for name, row in zip([ODD, "b.flac", "c.aiff", "sub/d.WAV", "sub/deeper/e.wav"], rows):
        assert row.startswith(name)
    assert "done" in rows[0] and "failed" in rows[3] and "pending" in rows[4]
    assert "0.5" in rows[0] and "→" in rows[0] and "30 s" in rows[0]
    assert "median MSS</dt><dd>0.9<" in text and "median time per sound</dt><dd>40 s<" in text
    assert "<dt>sounds</dt><dd>5<" in text and "<dt>failed</dt><dd>1<" in text

    # every relative link resolves to a file beside the page; the preset and the fxp are downloads
    rel = [a["href"] for a in p.links if not a["href"].startswith("#")] + [i["src"] for i in p.imgs] + \
          [a["src"] for a in p.audios if not a["src"].startswith("data:")]
    assert rel and all("<" not in h and '"' not in h for h in rel)
    for h in rel:
        assert (out / urllib.parse.unquote(h)).resolve().is_file(), h
    downloads = [urllib.parse.unquote(a["href"]) for a in p.links if "download" in a]
    assert 'a<b>&"c.amSynth' in downloads and 'a<b>&"c.fxp' in downloads and "b.amSynth" in downloads
    assert "../" + ODD in [urllib.parse.unquote(a["src"]) for a in p.audios]
    assert len(p.imgs) == 3 and len(p.audios) == 5 + 3  # every target, and the three matches

    # the aiff target (browsers do not play aiff) gets a preview beside its preset, written once: a
    # 16-bit wav of its first 10 s
    assert not [a for a in p.audios if a["src"].startswith("data:")]
    previews = [urllib.parse.unquote(a["src"]) for a in p.audios if a["src"].endswith(gallery.PREVIEW_SUFFIX)]
    assert previews == ["c" + gallery.PREVIEW_SUFFIX]
    data, sr = sf.read(out / previews[0])
    assert sr == SR and len(data) == 10 * SR and sf.info(out / previews[0]).subtype == "PCM_16"
    before = (out / previews[0]).stat().st_mtime_ns
    gallery.write_gallery(out, items, "Folder match", "amsynth", in_dir=d)
    assert (out / previews[0]).stat().st_mtime_ns == before


def test_gallery_in_headless_chromium(folder, tmp_path):
    d, out, items = _done_folder(folder)
    page = gallery.write_gallery(out, items, "Folder match", "amsynth", in_dir=d)
    probe = out / "probe.html"  # beside the page, so the same relative links
    probe.write_text(page.read_text().replace("<img loading='lazy'", "<img").replace("</body>", PROBE + "</body>"))
    p = _Page()
    p.feed(dump_probed_dom(probe, tmp_path))
    assert len(p.imgs) == 3 and all(int(i.get("data-natural-width", 0)) > 100 for i in p.imgs), p.imgs
    durations = [float(a.get("data-duration", "nan")) for a in p.audios]
    assert not [a for a in p.audios if "data-error" in a], "the browser could not load an audio file"
    # targets: 0.4, 0.3, 10 (the aiff's preview, cut), 0.3, 0.3 s; matches: 0.5 s each
    assert durations == pytest.approx([0.4, 0.5, 0.3, 0.5, 10.0, 0.5, 0.3, 0.3], abs=0.01)

    shot = tmp_path / "gallery.png"
    run_chromium([f"--screenshot={shot}", "--window-size=1400,1100", page.resolve().as_uri()], tmp_path)
    from PIL import Image

    img = np.asarray(Image.open(shot).convert("RGB"), dtype=np.float64)
    assert img.shape[:2] == (1100, 1400)
    assert (img.std(axis=(0, 1)) > 20).all(), "the screenshot is blank"
    # dark pixels: text and the (magma) spectrograms
    assert (img.mean(axis=2) < 100).mean() > 0.01
