"""The documentation site as a reader gets it: built in strict mode, then read as HTML and in a
headless browser.

The build must not show raw markup (reStructuredText math and roles, doctest prompts folded into
block quotes, untypeset formulas); every public name must have an entry with its example, the
optimizers and transforms their update rule, and every parameter table one row per parameter
with the signature's real default. In Chromium, with every network name unresolvable, MathJax
(served from the site itself) must typeset every formula of the optimizers page without error,
and the screenshot of that page must show it.
"""

from __future__ import annotations

import ast
import html
import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

import browser
import rangerlab
import rangerlab.transforms

pytest.importorskip(
    "mkdocs", reason='the docs build needs the docs extra: pip install -e ".[docs]"'
)

ROOT = Path(__file__).resolve().parent.parent
BROWSER = browser.BROWSER

#: Names whose entry must state an update rule as a typeset formula.
UPDATE_RULES = {
    "SGD", "Adam", "RAdam", "LARS", "LAMB", "Ranger", "RangerLARS", "Lookahead",
    "AddDecayedWeights", "Centralize", "LookaheadTransform", "Momentum", "ScaleByAdam",
    "ScaleByLARS", "ScaleByRAdam", "ScaleByTrustRatio", "Transform", "centralized",
    "rectification", "sync_",
}  # fmt: skip
#: Raw markup that means a docstring was written for another renderer.
RAW = {
    "reStructuredText math": re.compile(r"\.\. math::"),
    "a reStructuredText role": re.compile(r":(?:func|class|meth|mod|attr|data|obj|exc):`?"),
    "a literal-block marker": re.compile(r"::\s*$", re.M),
    "an untypeset formula": re.compile(r"\$\$"),
    "a doctest prompt outside a code block": re.compile(r"&gt;&gt;&gt;|>>>"),
}


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stderr[-4000:]}"
    return out


def pages(site: Path) -> list[Path]:
    return [p for p in site.rglob("*.html") if "assets" not in p.parts and p.name != "404.html"]


def prose(page_html: str) -> str:
    """The page's HTML without scripts, styles, code blocks, inline code and the search index."""
    out = re.sub(r"<(script|style|pre|code)\b.*?</\1>", " ", page_html, flags=re.S)
    return out


def public_names() -> list[tuple[str, object]]:
    names = [(f"rangerlab.{n}", getattr(rangerlab, n)) for n in rangerlab.__all__]
    names += [
        (f"rangerlab.transforms.{n}", getattr(rangerlab.transforms, n))
        for n in rangerlab.transforms.__all__
    ]
    return names


def anchors(obj: object, public: str) -> list[str]:
    """The ids an entry for ``obj`` may have: its public path or where it is defined."""
    if inspect.ismodule(obj):
        return [public, obj.__name__]
    return [public, f"{obj.__module__}.{obj.__qualname__}"]


def entry(site: Path, ids: list[str]) -> str | None:
    """The HTML of an entry, from its heading to the next entry's heading (members excluded)."""
    for page in (site / "api").rglob("*.html"):
        text = page.read_text()
        for anchor in ids:
            start = text.find(f'id="{anchor}" class="doc doc-heading"')
            if start >= 0:
                end = text.find('class="doc doc-heading"', start + len(anchor) + 30)
                return text[start : end if end >= 0 else len(text)]
    return None


def test_the_site_builds_strict_and_shows_no_raw_markup(site):
    checked = pages(site)
    assert len(checked) >= 8
    problems = [
        f"{page.relative_to(site)}: {what}: {m.group(0)!r}"
        for page in checked
        for what, pattern in RAW.items()
        for m in [pattern.search(prose(page.read_text()))]
        if m
    ]
    assert problems == []


def test_the_raw_markup_check_can_fail():
    folded = "<blockquote><blockquote><p>&gt;&gt;&gt; import torch &gt;&gt;&gt; w</p></blockquote>"
    bad = [folded, "<p>.. math:: d = g</p>", "<p>(:func: rangerlab.x)</p>", "<p>$$ a $$</p>"]
    for text in bad:
        assert any(p.search(prose(text)) for p in RAW.values()), text
    good = '<pre><code>&gt;&gt;&gt; import torch</code></pre><div class="arithmatex">\\[a\\]</div>'
    assert not any(p.search(prose(good)) for p in RAW.values())


@pytest.mark.parametrize("public,obj", public_names(), ids=[n for n, _ in public_names()])
def test_every_public_name_has_an_entry_with_example(site, public, obj):
    found = entry(site, anchors(obj, public))
    assert found is not None, f"{public} has no entry on the API pages"
    if inspect.ismodule(obj):
        return
    assert re.search(r"<pre>.*?&gt;&gt;&gt;", found, re.S), f"{public}: no example code block"
    if public.rsplit(".", 1)[1] in UPDATE_RULES:
        assert 'class="arithmatex"' in found, f"{public}: no typeset update rule"


def parameter_rows(found: str) -> dict[str, str]:
    """The name and default of each row of an entry's first parameter table."""
    table = re.search(r"Parameters:.*?<tbody>(.*?)</tbody>", found, re.S)
    assert table, "no parameter table"
    rows = {}
    for row in re.findall(r"<tr class=\"doc-section-item\">(.*?)</tr>", table.group(1), re.S):
        cells = re.findall(r"<td>(.*?)</td>", row, re.S)
        name = html.unescape(re.sub(r"<.*?>", "", cells[0])).strip()
        rows[name] = html.unescape(re.sub(r"<.*?>", "", cells[-1])).strip()
    return rows


SIGNED = [
    (n, o)
    for n, o in public_names()
    if inspect.isclass(o) and issubclass(o, rangerlab.Chain) and o is not rangerlab.Chain
] + [(f"rangerlab.{n}", getattr(rangerlab, n)) for n in ("Lookahead", "create_optimizer")]


@pytest.mark.parametrize("public,obj", SIGNED, ids=[n for n, _ in SIGNED])
def test_parameter_tables_have_one_row_per_parameter_with_its_default(site, public, obj):
    rows = parameter_rows(entry(site, anchors(obj, public)))
    signature = inspect.signature(obj.__init__ if inspect.isclass(obj) else obj)
    expected = {
        ("**" if p.kind is p.VAR_KEYWORD else "") + p.name: p.default
        for p in signature.parameters.values()
        if p.name != "self"
    }
    assert list(rows) == list(expected)
    for name, default in expected.items():
        if name.startswith("**"):
            continue
        if default is inspect.Parameter.empty:
            assert rows[name] == "required", name
        else:
            assert ast.literal_eval(rows[name]) == default, (name, rows[name])


def test_returns_tables_have_one_row(site):
    """No rangerlab function returns a tuple: a second row is a description split in two."""
    tables = [
        table
        for page in (site / "api").rglob("*.html")
        for table in re.findall(r"Returns:.*?<tbody>(.*?)</tbody>", page.read_text(), re.S)
    ]
    assert len(tables) >= 10
    assert [t.count('<tr class="doc-section-item">') for t in tables] == [1] * len(tables)


def test_formulas_and_mathjax_come_from_the_site(site):
    page = (site / "api" / "optimizers" / "index.html").read_text()
    assert page.count('class="arithmatex"') >= 8
    sources = re.findall(r'<script[^>]*\bsrc="([^"]+)"', page)
    assert any(s.endswith("assets/mathjax/tex-svg.js") for s in sources)
    assert not [s for s in sources if re.match(r"(https?:)?//", s)], sources
    assert (site / "assets" / "mathjax" / "tex-svg.js").stat().st_size > 1_000_000


def test_references_link_to_entries(site):
    page = (site / "api" / "optimizers" / "index.html").read_text()
    links = set(re.findall(r'href="([^"]*#rangerlab\.[^"]*)"', page))
    assert any(link.endswith("#rangerlab.transforms.centralized") for link in links)
    for link in links:
        path, anchor = link.split("#")
        target = (site / "api" / "optimizers" / path).resolve() if path else None
        text = (target / "index.html" if target and target.is_dir() else target) if path else None
        body = text.read_text() if text else page
        assert f'id="{anchor}"' in body, link


# -- in a browser ------------------------------------------------------------------------------

#: What MathJax draws for TeX it cannot typeset: a parse error, or an unknown macro in red (the
#: page's CSS names merror too, in brackets, so only the drawn element counts).
TEX_ERROR = re.compile(r'<g\b[^>]*data-mml-node="merror"|<mtext mathcolor="red">')

needs_browser = pytest.mark.skipif(
    BROWSER is None, reason="needs Debian's chromium (apt-get install chromium; .ci/run does it)"
)


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """Headless Chromium (the common flags of tests/browser.py) with no network names."""
    cmd = browser.command(
        tmp_path / "chromium-profile",
        "--host-resolver-rules=MAP * ~NOTFOUND",  # offline: any fetch from the web fails
        "--virtual-time-budget=20000",
        *args,
    )
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180)


@needs_browser
def test_mathjax_typesets_every_formula_offline(site, tmp_path):
    page = site / "api" / "optimizers" / "index.html"
    formulas = page.read_text().count('class="arithmatex"')
    dom = chromium(tmp_path, "--dump-dom", page.as_uri()).stdout
    assert dom.count("<mjx-container") == formulas
    assert "<svg" in dom
    assert not TEX_ERROR.search(dom)


@needs_browser
def test_screenshot_of_the_optimizers_page_shows_it(site, tmp_path):
    image = pytest.importorskip("PIL.Image", reason="needs Pillow (the lab extra's matplotlib)")
    shot = tmp_path / "optimizers.png"
    page = site / "api" / "optimizers" / "index.html"
    chromium(tmp_path, "--window-size=1280,1600", f"--screenshot={shot}", page.as_uri())
    with image.open(shot) as picture:
        grey = picture.convert("L")
        assert grey.size == (1280, 1600)
        histogram = grey.histogram()
    dark = sum(histogram[:128]) / sum(histogram)
    assert 0.01 < dark < 0.5  # text and formulas on a light page, not blank, not black
    assert sum(1 for count in histogram if count) > 32  # anti-aliased glyphs, not a flat fill


@needs_browser
def test_the_browser_check_sees_a_formula_mathjax_cannot_typeset(site, tmp_path):
    page = site / "api" / "bad-formula.html"
    page.write_text(
        '<!DOCTYPE html><html><head><script src="../assets/mathjax-config.js"></script>'
        '<script src="../assets/mathjax/tex-svg.js"></script></head><body>'
        '<div class="arithmatex">\\[ \\undefinedmacro{x} \\]</div>'
        '<div class="arithmatex">\\[ a}b \\]</div></body></html>'
    )
    try:
        dom = chromium(tmp_path, "--dump-dom", page.as_uri()).stdout
    finally:
        page.unlink()
    assert len(TEX_ERROR.findall(dom)) == 2
