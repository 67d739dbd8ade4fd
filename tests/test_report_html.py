"""The evaluation's HTML report, opened in headless Chromium: tables, embedded images and audio
players are in the DOM the browser builds, the PNGs decode and the wavs load."""

from __future__ import annotations

import base64
from html.parser import HTMLParser

import numpy as np
import pytest

from tests.chromium import PROBE, dump_probed_dom
from training import report

SR = 8000


def _result() -> dict:
    methods = {
        "model": {"description": "prediction", "metrics": {"mss": 1.5, "logmel_l1": 10.0, "mfcc_l1": 20.0,
                                                            "lsd_db": 12.0, "spectral_convergence": 0.9,
                                                            "param_mae": 0.2, "cat_acc": 0.5},
                  "median_mss": 1.4, "n_ok": 2, "n_failed": 0, "seconds_per_target": 0.01, "renders_per_target": 0},
        "model+refine": {"description": "refined", "metrics": {"mss": 1.3}, "median_mss": 1.3, "n_ok": 2,
                         "n_failed": 0, "seconds_per_target": 2.0, "renders_per_target": 5,
                         "curve": {"steps": [0, 10, 20], "mean_mss": [1.5, 1.4, 1.3],
                                   "seconds_per_target": [0.01, 1.0, 2.0]}},
        "cma_mean": {"description": "CMA-ES <500>", "metrics": {"mss": 1.2, "logmel_l1": 9.0, "mfcc_l1": 25.0,
                                                                "lsd_db": 11.0, "spectral_convergence": 0.8,
                                                                "param_mae": 0.3, "cat_acc": 0.7},
                     "median_mss": 1.1, "n_ok": 1, "n_failed": 1, "seconds_per_target": 20.0,
                     "renders_per_target": 500},
    }
    per = [{"name": f"t{k}", "note": 60, "mss": {"model": 1.5 + k, "cma_mean": 1.2 if k == 0 else None}}
           for k in range(2)]
    return {"run": "runs/x", "targets": "factory", "n": 2, "description": "two <targets> & more",
            "methods": methods, "per_target": per, "notes": ["a note"],
            "bars": [{"name": "bar one", "passed": False, "detail": "1.5 vs 1.2"},
                     {"name": "bar two", "passed": None, "detail": "not run"}],
            "settings": {"seed": 0}}


def _examples() -> list[report.Example]:
    t = np.arange(SR // 2) / SR
    tone = (0.3 * np.sin(2 * np.pi * 220 * t) * np.exp(-3 * t)).astype(np.float32)
    stereo = np.stack([tone, tone])
    return [report.Example(f"ex{k}", SR, stereo, {"model": 0.5 * stereo, "cma_mean": stereo[::-1] * 0.7},
                           {"model": 1.5, "cma_mean": 1.2}) for k in range(3)]


class _Dom(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.imgs: list[dict] = []
        self.audios: list[dict] = []
        self._table: str | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self._table = a.get("id", f"table{len(self.tables)}")
            self.tables[self._table] = []
        elif tag == "tr" and self._table is not None:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
        elif tag == "img":
            self.imgs.append(a)
        elif tag == "audio":
            self.audios.append(a)

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None and self._table is not None:
            self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def test_html_report_in_headless_chromium(tmp_path):
    result, examples = _result(), _examples()
    page = report.write_html(result, tmp_path / "report.html", examples, audio_examples=2)
    text = page.read_text()
    assert "http://" not in text and "https://" not in text, "the report must be self-contained"
    probe = tmp_path / "probe.html"
    probe.write_text(text.replace("</body>", PROBE + "</body>"))

    dom = _Dom()
    dom.feed(dump_probed_dom(probe, tmp_path))

    methods = dom.tables["methods"]
    assert methods[0][0] == "method" and "MSS" in methods[0] and "wall time / target" in methods[0]
    assert [r[0] for r in methods[1:]] == ["model", "model+refine", "cma_mean"]
    mss_col = methods[0].index("MSS")
    assert [r[mss_col] for r in methods[1:]] == ["1.5", "1.3", "1.2"]
    assert methods[2][mss_col + 1] == "–"  # a metric the method lacks
    assert "1 (1 failed)" in methods[3]
    assert dom.tables["refine-curve"][1:] == [["0", "1.5", "0.01 s"], ["10", "1.4", "1 s"], ["20", "1.3", "2 s"]]
    per = dom.tables["per-target"]
    assert [r[0] for r in per[1:]] == ["t0", "t1"] and per[2][-1] == "–"

    assert len(dom.imgs) == len(examples)
    for img in dom.imgs:
        assert img["src"].startswith("data:image/png;base64,")
        assert base64.b64decode(img["src"].split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
        assert int(img.get("data-natural-width", 0)) > 100, "the browser could not decode an embedded PNG"

    # players for the first two examples only: target + 2 methods each
    assert len(dom.audios) == 2 * 3
    for a in dom.audios:
        assert a["src"].startswith("data:audio/wav;base64,")
        assert base64.b64decode(a["src"].split(",", 1)[1])[:4] == b"RIFF"
        assert "data-error" not in a, "the browser could not decode an embedded wav"
        assert float(a.get("data-duration", "nan")) == pytest.approx(0.5, abs=0.01)  # decoded: 0.5 s
    # text is escaped, bars are shown with their verdict
    assert "two &lt;targets&gt; &amp; more" in text and "FAIL" in text and "n/a" in text


def test_markdown_report_has_the_tables(tmp_path):
    md = report.write_markdown(_result(), tmp_path / "r.md", {"ex0": "r-example-0.png"}).read_text()
    assert "| method | MSS |" in md and "| cma_mean | **1.2** |" in md
    assert "**FAIL**: bar one" in md and "![ex0](r-example-0.png)" in md
    assert "| t1 | 60 | 2.5 | – | – |" in md and "| 20 | 1.3 | 2 s |" in md


def test_spectrogram_png_and_wav_bytes():
    ex = _examples()[0]
    png = report.spectrogram_png([("a", ex.target), ("b", ex.target[0])], SR, title="t")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    import soundfile as sf
    import io

    data, sr = sf.read(io.BytesIO(report.wav_bytes(ex.target, SR)))
    assert sr == SR and data.shape == (SR // 2, 2)
    assert np.max(np.abs(data - ex.target.T)) < 1e-4
