"""The report opened from disk in a real headless browser: every figure loads, no page errors."""

import gzip
import html
import json
import re
import subprocess
from pathlib import Path

import pytest

import browser

BROWSER = browser.BROWSER

# Injected into a copy of the page: records failed loads and script errors, then on load writes
# what it saw into the DOM, which --dump-dom prints.
PROBE = """<script>
window.__errors = [];
window.addEventListener('error', function (e) {
  window.__errors.push(e.message || (e.target && (e.target.src || e.target.href)) || 'error');
}, true);
window.addEventListener('load', function () {
  var bad = [], imgs = document.images;
  for (var i = 0; i < imgs.length; i++) {
    if (!imgs[i].complete || imgs[i].naturalWidth === 0) bad.push(imgs[i].getAttribute('src'));
  }
  var out = document.createElement('pre');
  out.id = 'lab-check';
  out.textContent = JSON.stringify({images: imgs.length, broken: bad, errors: window.__errors});
  document.body.appendChild(out);
});
</script>"""

pytestmark = pytest.mark.skipif(
    BROWSER is None, reason="needs Debian's chromium (apt-get install chromium; .ci/run does it)"
)


def browse(page, tmp_path) -> dict:
    """Open ``page`` (a file) in headless Chromium with the probe injected; return its record."""
    probe = page.with_name("_probe_" + page.name)
    probe.write_text(page.read_text().replace("<head>", "<head>" + PROBE, 1))
    cmd = browser.command(
        tmp_path / "chromium-profile", "--virtual-time-budget=15000", "--dump-dom", probe.as_uri()
    )
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    finally:
        probe.unlink()
    found = re.search(r'<pre id="lab-check">(.*?)</pre>', done.stdout, re.S)
    assert found, f"the page never finished loading; chromium said: {done.stderr[-2000:]}"
    return json.loads(html.unescape(found.group(1)))


def test_every_figure_loads_and_the_page_has_no_errors(tiny_report, tmp_path):
    out, _ = tiny_report
    record = browse(out / "report.html", tmp_path)
    n_figures = len(list((out / "figures").iterdir()))
    assert record["images"] == n_figures
    assert record["broken"] == []
    assert record["errors"] == []


def test_the_probe_sees_a_broken_figure(tmp_path):
    page = tmp_path / "page.html"
    page.write_text(
        '<!DOCTYPE html><html><head></head><body><img src="figures/missing.png">'
        "<script>undefined_function()</script></body></html>"
    )
    record = browse(page, tmp_path)
    assert record["broken"] == ["figures/missing.png"]
    assert any("undefined_function" in e for e in record["errors"])


@pytest.mark.parametrize("mode", ["quick", "full"])
def test_the_recorded_quick_and_full_reports_render_with_every_figure(mode, tmp_path):
    """The results of the real `rangerlab run` and `rangerlab run --full` quoted in the README
    (stored compressed) redrawn by `rangerlab report`: every figure of every experiment loads."""
    from rangerlab.lab import report
    from rangerlab.lab.experiments import EXPERIMENTS

    out = tmp_path / mode
    out.mkdir()
    stored = Path(__file__).parent / "data" / f"{mode}-results.json.gz"
    (out / "results.json").write_bytes(gzip.decompress(stored.read_bytes()))
    report.render(out)
    record = browse(out / "report.html", tmp_path)
    figures = sorted(p.name for p in (out / "figures").iterdir())
    assert json.loads((out / "results.json").read_text())["environment"]["mode"] == mode
    assert {f.split(".")[0].removesuffix("-intervals") for f in figures} >= set(EXPERIMENTS)
    assert record["images"] == len(figures)
    assert record["broken"] == []
    assert record["errors"] == []
