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

from . import stats
from .experiments import EXPERIMENTS
from .experiments._common import interval_figure

REPORT = "report.html"
FIGURES = "figures"

_CSS = """
body{font-family:system-ui,sans-serif;max-width:1150px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0;font-size:.88em}
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f3f3f3} img{max-width:100%;border:1px solid #eee}
.v{font-weight:bold;padding:.1em .5em;border-radius:.3em;white-space:nowrap}
.supported{background:#d7f5d7}.contradicted{background:#f8d4d4}
.inconclusive,.illustration{background:#eee}
section{margin-top:2.5em;border-top:2px solid #ddd} .claim{font-size:1.05em}
.small{color:#555;font-size:.85em} .warn{background:#fff4d6;padding:.5em .8em;border-radius:.3em}
"""

HOW_TO_READ = (
    "How to read the numbers. <b>mean ± sd</b>: the mean over seeds and the sample standard "
    "deviation over seeds (n-1), describing the spread of single runs. <b>difference [low, "
    "high]</b>: the mean paired difference between two arms run with the same seeds (same "
    "initialisation and data order), and its confidence interval (95%, or 95% family-wise when "
    "a verdict combines several comparisons: each interval is then Bonferroni-widened, e.g. "
    "97.5% for two). The interval is the exact sign-flip interval: valid with ties, discrete "
    "accuracies and zero spread; with fewer than 6 seeds it cannot exclude anything and shows "
    "-inf/+inf. A verdict is <i>supported</i> or <i>contradicted</i> only when the whole interval "
    "lies on one side of the claim's threshold; otherwise <i>inconclusive</i>."
)


def _esc(value: Any) -> str:
    return html.escape(str(value))


def _table(columns: list[str], rows: list[list[Any]], raw: bool = False) -> str:
    cell = (lambda v: str(v)) if raw else _esc
    head = "".join(f"<th>{_esc(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _verdict(status: str) -> str:
    return f'<span class="v {_esc(status)}">{_esc(status)}</span>'


def _tuning(exp: dict[str, Any]) -> str:
    if not exp["tuning"]:
        return ""
    rows = []
    for arm, t in exp["tuning"].items():
        scores = ", ".join(
            f"{lr:.3g}: {s:.4g}" for lr, s in zip(t["grid"], t["score"], strict=True)
        )
        edge = "yes: the best rate may lie outside the grid" if t["edge"] else "no"
        added = t.get("added", 0)
        rows.append([exp["labels"][arm], scores, f"{t['lr']:.3g}", added, edge])
    return (
        f"<p><b>Tuning</b> (validation split, tuning seeds {exp['tuning_seeds']}; every arm starts "
        f"from a grid of the same size and half-decade spacing, extended by one rate past an end "
        f"while the best rate sits there, at most twice; score = mean validation loss, lower is "
        f"better):</p>"
        + _table(
            ["arm", "lr: validation score", "chosen lr", "rates added", "still at an end?"], rows
        )
    )


def _arms(exp: dict[str, Any]) -> str:
    metrics = {
        k: v for k, v in exp["metrics"].items() if any(k in rs[0] for rs in exp["runs"].values())
    }
    if not metrics:
        return ""
    rows = []
    for arm, runs in exp["runs"].items():
        cells = [stats.fmt([r[k] for r in runs]) if k in runs[0] else "" for k in metrics]
        rows.append([exp["labels"][arm], *cells])
    return (
        f"<p><b>Arms</b> (test split, {len(exp['seeds'])} seeds; mean ± sd over seeds):</p>"
        + _table(["arm", *metrics.values()], rows)
    )


def _comparisons(exp: dict[str, Any]) -> str:
    if not exp["comparisons"]:
        return ""
    rows = []
    for c in exp["comparisons"]:
        side = ">" if c["direction"] > 0 else "<"
        rows.append(
            [
                _esc(c["name"]) + ("" if c["in_verdict"] else " <i>(secondary)</i>"),
                _esc(f"{stats.fmt_interval(c)} {c['unit']}"),
                f"{c['level']:.1%}",
                _esc(f"{side} {c['threshold']:g}"),
                f"{c['p']:.3g}",
                _verdict(c["status"]),
            ]
        )
    cols = [
        "comparison (paired over seeds)",
        "difference [low, high]",
        "interval level",
        "claim needs",
        "sign-flip p",
        "status",
    ]
    return "<p><b>Comparisons</b>:</p>" + _table(cols, rows, raw=True)


def _extra_tables(exp: dict[str, Any]) -> str:
    declared = EXPERIMENTS[exp["id"]].tables
    tables = list(exp["extra"]["tables"]) + (declared(exp) if declared else [])
    return "".join(
        f"<p><b>{_esc(t['title'])}</b></p>" + _table(t["columns"], t["rows"]) for t in tables
    )


def _power(exp: dict[str, Any]) -> str:
    p = exp["power"]
    if not p["provisional"]:
        return ""
    if p["seeds"] < p["seeds_needed"]:
        why = (
            f"{p['seeds']} seeds cannot exclude anything at this level: the exact test needs "
            f"at least {p['seeds_needed']} for this verdict, so it is inconclusive by design"
        )
    else:
        why = "a quick-mode preview: short runs and few seeds, low power"
    return f'<p class="warn"><b>Provisional.</b> {_esc(why)}; run --full for quotable numbers.</p>'


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
<p class="small">Lecture (original): {_esc(exp["claim_zh"])}</p>
<p><b>Setup.</b> {_esc(exp["setup"])}</p>
{imgs}
{_tuning(exp)}
{_arms(exp)}
{_extra_tables(exp)}
{_comparisons(exp)}
<p><b>Verdict:</b> {_verdict(exp["verdict"]["status"])} {_esc(exp["verdict"]["detail"])}</p>
{_power(exp)}
<p><b>What this shows.</b> {_esc(exp["shows"])} <b>What it cannot show.</b>
{_esc(exp["cannot_show"])}</p>
<p class="small">Rule: {_esc(exp["verdict"]["rule"])}. Test seeds {_esc(exp["seeds"])}.
Settings: {_esc(cfg)}. Ran in {exp["seconds"]} s.</p>
</section>"""


def headline(exp: dict[str, Any]) -> str:
    """The deciding comparisons as ``name: difference [low, high]`` text (summary tables)."""
    voting = [c for c in exp["comparisons"] if c["in_verdict"]]
    if not voting:
        return "(illustration)"
    return "; ".join(
        f"{c['name']}: {stats.fmt_interval(c)} {c['unit']} ({c['level']:.1%})" for c in voting
    )


def short_claim(exp: dict[str, Any]) -> str:
    """The tested sentence of an experiment's claim (after the quote), for summary tables."""
    claim = exp["claim"]
    for marker in ("Tested: ", "Tested as "):
        if marker in claim:
            return claim.split(marker, 1)[1]
    return claim


def summary_markdown(results: dict[str, Any]) -> str:
    """The verdict table as Markdown (what the README quotes): claim, verdict, the deciding
    effect with its interval, seeds. Printed by ``rangerlab report DIR --summary``."""
    env = results["environment"]
    lines = [
        f"Mode `{env['mode']}`, started {env['started']}, {env['cpu']} ({env['cpu_count']} "
        f"cores), {env['worker processes']} worker processes, torch {env['torch']}, "
        f"{env['seconds']:.0f} s of experiment time.",
        "",
        "| experiment | claim tested | verdict | deciding effect: difference [interval] (level) "
        "| seeds |",
        "|---|---|---|---|---|",
    ]
    for exp_id, exp in results["experiments"].items():
        flag = " (provisional)" if exp["power"]["provisional"] else ""
        cells = [
            f"`{exp_id}`",
            short_claim(exp),
            f"**{exp['verdict']['status']}**{flag}",
            headline(exp),
            str(len(exp["seeds"])),
        ]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


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
        if exp["comparisons"]:
            figures.append(interval_figure(exp, out / FIGURES, f"{exp_id}-intervals.png"))
        sections.append(_section(exp, figures))
        flag = " (provisional)" if exp["power"]["provisional"] else ""
        summary.append(
            [
                f'<a href="#{_esc(exp_id)}">{_esc(exp["title"])}</a>',
                _verdict(exp["verdict"]["status"]) + _esc(flag),
                _esc(headline(exp)),
                str(len(exp["seeds"])),
            ]
        )
    preview = ""
    if env["mode"] != "full":
        preview = (
            '<p class="warn"><b>This is a preview</b> (mode: ' + _esc(env["mode"]) + "). Runs are "
            "short and seeds few, so its verdicts are provisional: an inconclusive verdict here "
            "says little, and a supported or contradicted one may change under "
            "<code>rangerlab run --full</code>, which holds the quotable numbers.</p>"
        )
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>rangerlab report</title>
<style>{_CSS}</style></head><body>
<h1>rangerlab: the lecture's claims, measured</h1>
<p>Each experiment quotes a claim from the lecture, tests it on real data shipped with the
install (scikit-learn's digits, the Python standard library's docstrings) with every arm run
on the same seeds, and gives a verdict computed from the numbers. Every number here is also in
<code>results.json</code>.</p>
{preview}
<p class="small">{HOW_TO_READ}</p>
<h3>Verdicts</h3>
{
        _table(
            ["experiment", "verdict", "deciding effect: difference [low, high] (level)", "seeds"],
            summary,
            raw=True,
        )
    }
<h3>Environment</h3>
{_table(["setting", "value"], [[k, "" if v is None else v] for k, v in env.items()])}
{"".join(sections)}
</body></html>
"""
    path = out / REPORT
    tmp = out / f".{REPORT}.tmp"
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, path)  # never a half-written report.html
    return path
