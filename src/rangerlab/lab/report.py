"""Renders ``report.html`` and its figures from ``results.json`` alone.

The page is self-contained apart from its figures, which sit beside it in ``figures/`` and are
linked relatively, so it works opened straight from disk.
"""

from __future__ import annotations

import html
import json
import os
from pathlib import Path
from typing import Any

from .experiments import EXPERIMENTS

REPORT = "report.html"
FIGURES = "figures"

_CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0;font-size:.9em}
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}
th{background:#f3f3f3} img{max-width:100%;border:1px solid #eee}
.v{font-weight:bold;padding:.1em .5em;border-radius:.3em}
.supported{background:#d7f5d7}.contradicted{background:#f8d4d4}.inconclusive{background:#eee}
section{margin-top:2.5em;border-top:2px solid #ddd} .claim{font-size:1.1em}
.small{color:#666;font-size:.85em}
"""


def _esc(value: Any) -> str:
    return html.escape(str(value))


def _table(columns: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{_esc(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_esc(v)}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _verdict(v: dict[str, str]) -> str:
    return f'<span class="v {_esc(v["status"])}">{_esc(v["status"])}</span>'


def _section(exp: dict[str, Any], figures: list[str]) -> str:
    imgs = "".join(
        f'<p><img src="{FIGURES}/{_esc(name)}" alt="{_esc(exp["title"])}: {_esc(name)}"></p>'
        for name in figures
    )
    cfg = ", ".join(f"{k}={v}" for k, v in exp["config"].items())
    return f"""
<section id="{_esc(exp["id"])}">
<h2>{_esc(exp["title"])} <span class="small">({_esc(exp["id"])})</span></h2>
<p class="claim"><b>Claim.</b> {_esc(exp["claim"])}</p>
<p><b>Setup.</b> {_esc(exp["setup"])}</p>
{imgs}
{_table(exp["table"]["columns"], exp["table"]["rows"])}
<p><b>Verdict:</b> {_verdict(exp["verdict"])} {_esc(exp["verdict"]["detail"])}</p>
<p class="small">Rule: {_esc(exp["verdict"]["rule"])}. Settings: {_esc(cfg)}.
Ran in {exp["seconds"]} s.</p>
</section>"""


def render(out: Path) -> Path:
    """Draw every experiment's figures into ``out/figures`` and write ``out/report.html`` from
    ``out/results.json``. Returns the report's path.

    Raises:
        FileNotFoundError: ``out/results.json`` does not exist.
        ValueError: it names an experiment this version does not know.
    """
    source = out / "results.json"
    if not source.is_file():
        raise FileNotFoundError(f"{source} not found; run `rangerlab run --out {out}` first")
    results = json.loads(source.read_text(encoding="utf-8"))
    unknown = [e for e in results["experiments"] if e not in EXPERIMENTS]
    if unknown:
        raise ValueError(f"{source} holds unknown experiment(s): {', '.join(unknown)}")
    env = results["environment"]
    sections, summary = [], []
    for exp_id, exp in results["experiments"].items():
        figures = EXPERIMENTS[exp_id].plot(exp, out / FIGURES)
        sections.append(_section(exp, figures))
        summary.append(
            [
                f'<a href="#{_esc(exp_id)}">{_esc(exp["title"])}</a>',
                _esc(exp["claim"]),
                _verdict(exp["verdict"]),
            ]
        )
    env_rows = [[k, "" if v is None else v] for k, v in env.items()]
    summary_rows = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in summary)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>rangerlab report</title>
<style>{_CSS}</style></head><body>
<h1>rangerlab: the lecture's claims, measured</h1>
<p>Each experiment states a claim from the lecture, runs it on real data shipped with the install
(scikit-learn's digits, the Python standard library's docstrings) over several seeds, and gives a
verdict computed from the numbers. Every number here is also in <code>results.json</code>.</p>
<h3>Environment</h3>
{_table(["setting", "value"], env_rows)}
<h3>Verdicts</h3>
<table><thead><tr><th>experiment</th><th>claim</th><th>verdict</th></tr></thead>
<tbody>{summary_rows}</tbody></table>
{"".join(sections)}
</body></html>
"""
    path = out / REPORT
    tmp = out / f".{REPORT}.tmp"
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, path)  # never a half-written report.html
    return path
