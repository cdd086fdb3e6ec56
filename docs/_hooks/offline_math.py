"""MkDocs hook: serve MathJax from the installed ``django-static-mathjax`` package.

The formulas in the API pages are typeset in the browser by MathJax. Its script is copied into the
built site from the Python package (an ordinary dependency of the ``docs`` extra), so the site
renders offline and nothing is fetched when a page is viewed. ``tex-svg.js`` is MathJax's single
file build with its fonts inside (SVG output), so no other file is needed.
"""

from __future__ import annotations

from pathlib import Path

from mkdocs.structure.files import File, Files

#: Where the script lands in the site; ``mkdocs.yml`` loads it through ``extra_javascript``.
SITE_PATH = "assets/mathjax/tex-svg.js"


def mathjax_script() -> Path:
    """The MathJax 3 ``tex-svg.js`` of the installed package (an error that says how to get it)."""
    try:
        import mathjax
    except ImportError as e:  # pragma: no cover - the docs extra installs it
        raise RuntimeError(
            'the docs need MathJax from the django-static-mathjax package: pip install -e ".[docs]"'
        ) from e
    return Path(mathjax.__file__).parent / "static" / "mathjax" / "es5" / "tex-svg.js"


def on_files(files: Files, config) -> Files:
    files.append(File.generated(config, SITE_PATH, abs_src_path=str(mathjax_script())))
    return files
