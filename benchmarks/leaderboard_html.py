"""A static HTML page of the leaderboard: one sortable table per dataset and protocol.

No server and no external assets: one ``index.html`` with its own CSS and a few lines of script
(click a column header to sort; numeric cells sort by the mean, missing values last). Every metric
cell links to the records of its seeds and every row label to its first record, by paths relative
to the page, so the page works from a clone when the records are committed beside it.
"""
from __future__ import annotations

import html
import math
import os
from pathlib import Path

from benchmarks.leaderboard import CAPTION, Leaderboard, Table, _sorted_rows, bests, cell_text, numbers, spread
from benchmarks.metric_info import arrow, metric_info
from benchmarks.stats import summarise

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border-bottom: 1px solid #ddd; padding: 0.3em 0.7em; text-align: right; white-space: nowrap; }
th:first-child, td:first-child { text-align: left; }
th { cursor: pointer; background: #f4f4f4; }
th[aria-sort="ascending"]::after { content: " ▲"; } th[aria-sort="descending"]::after { content: " ▼"; }
caption { caption-side: bottom; text-align: left; font-size: 0.85em; color: #555; padding-top: 0.5em; }
td a.seed { font-size: 0.75em; color: #777; margin-left: 0.2em; }
.best { font-weight: bold; }
figure { display: inline-block; margin: 0.5em; } figure img { max-width: 28em; }
"""

SCRIPT = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("th").forEach(function (th, col) {
    th.addEventListener("click", function () {
      var asc = th.getAttribute("aria-sort") !== "ascending";
      table.querySelectorAll("th").forEach(function (h) { h.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", asc ? "ascending" : "descending");
      var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      function key(row) {
        var cell = row.cells[col], v = cell.getAttribute("data-value");
        return v === null ? cell.textContent.trim() : parseFloat(v);
      }
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        var xn = typeof x === "number" && isNaN(x), yn = typeof y === "number" && isNaN(y);
        if (xn || yn) { return xn - yn; }  // missing values last either way
        return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1);
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _link(path: Path, page_dir: Path) -> str:
    return Path(os.path.relpath(path, page_dir)).as_posix()


def _table(table: Table, page_dir: Path, bold: bool) -> list[str]:
    out = [f"<section><h2>{_e(table.name)}</h2>"]
    if table.shared:
        out.append("<p>Every row: " + ", ".join(f"<code>{_e(x)}</code>" for x in table.shared) + "</p>")
    columns = table.columns()
    if table.rows:
        best = bests(table, bold)
        out.append('<table class="sortable"><thead><tr><th>configuration</th><th>n</th>')
        for c in columns:
            info = metric_info(c)
            title = f"{info.description}; {info.direction or 'no'} is better" if info.direction else info.description
            unit = f" ({info.unit})" if info.unit else ""
            out.append(f'<th data-direction="{_e(info.direction or "")}" title="{_e(title)}">'
                       f'{_e(c.removeprefix("test/"))} {arrow(info.direction)}{_e(unit)}</th>')
        out.append("<th>epochs</th><th>wall (s)</th></tr></thead><tbody>")
        for row in _sorted_rows(table):
            first = row.runs[0].path
            out.append(f'<tr data-fingerprint="{row.fingerprint}"><td title="config {row.fingerprint}">'
                       f'<a href="{_e(_link(first, page_dir))}">{_e(row.label)}</a></td>'
                       f'<td data-value="{len(row.runs)}">{len(row.runs)}</td>')
            for c in columns:
                vals = row.values.get(c)
                if not vals:
                    out.append('<td data-value="NaN">—</td>')
                    continue
                s = summarise(vals)
                text = cell_text(vals, c, len(row.runs))
                seeds = "".join(f'<a class="seed" href="{_e(_link(r.path, page_dir))}">s{_e(r.record["seed"])}</a>'
                                for r in row.runs if c.split(" [")[0] in r.record.get("metrics", {}))
                cls = ' class="best"' if best[c] == row.fingerprint else ""
                value = repr(s.mean) if math.isfinite(s.mean) else "NaN"
                out.append(f'<td data-value="{value}"{cls}>{_e(text)}{seeds}</td>')
            epochs, walls = numbers(row, "epochs"), numbers(row, "wall_time_s")
            wall = summarise(walls).mean if walls else math.nan
            out.append(f'<td data-value="{max(epochs) if epochs else "NaN"}">{_e(spread(epochs, 0))}</td>'
                       f'<td data-value="{wall if walls else "NaN"}">{f"{wall:.1f}" if walls else "—"}</td></tr>')
        caption = CAPTION.replace("**Bold**", "Bold") if bold else CAPTION.split(" **Bold**")[0] + " Nothing is marked best here."
        out.append(f"</tbody><caption>{_e(caption)}</caption></table>")
    if table.failed:
        out.append("<p>Not averaged in (failed or diverged):</p><ul>")
        for run in table.failed:
            err = run.record.get("error") or {}
            msg = str(err.get("message") or "").splitlines()
            out.append(f'<li><a href="{_e(_link(run.path, page_dir))}">{_e(run.record["method"])}, seed '
                       f'{_e(run.record["seed"])}</a>: <b>{_e(run.record["status"])}</b> at step {_e(err.get("step"))}: '
                       f'{_e(msg[0] if msg else "")}</li>')
        out.append("</ul>")
    out.append("</section>")
    return out


def render_html(board: Leaderboard, page_dir: Path, title: str = "dgm-bench leaderboard") -> str:
    body = [f"<h1>{_e(title)}</h1>",
            f"<p>Records under <code>{_e(_link(board.root, page_dir))}</code>; "
            "↓ lower is better, ↑ higher is better; click a column to sort.</p>"]
    for name in sorted(board.tables):
        body += _table(board.tables[name], page_dir, bold=True)
    if board.outside:
        body.append("<h2>Records outside the current spec (not averaged into the tables above)</h2>")
        for name in sorted(board.outside):
            body += _table(board.outside[name], page_dir, bold=False)
    figures = sorted(p for ext in ("png", "svg", "jpg") for p in Path(board.root).glob(f"*.{ext}"))
    if figures:  # the sample grids and figures published beside the records
        body.append("<h2>Figures</h2>")
        body += [f'<figure><a href="{_e(_link(f, page_dir))}"><img src="{_e(_link(f, page_dir))}" alt="{_e(f.stem)}">'
                 f"</a><figcaption>{_e(f.name)}</figcaption></figure>" for f in figures]
    if board.problems:
        body.append(f"<h2>Records not read ({len(board.problems)})</h2><ul>")
        body += [f'<li><a href="{_e(_link(p.path, page_dir))}">{_e(os.path.relpath(p.path, board.root))}</a>: '
                 f'{_e(p.reason)}</li>' for p in board.problems]
        body.append("</ul>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<link rel=\"icon\" href=\"data:,\">"  # no favicon request: nothing on the page may 404
            f"<title>{_e(title)}</title><style>{STYLE}</style></head><body>\n"
            + "\n".join(body) + f"\n<script>{SCRIPT}</script>\n</body></html>\n")


def write_html(board: Leaderboard, root: Path, out: Path) -> Path:
    """Write ``out/index.html``; links to records are relative to ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    page = out / "index.html"
    page.write_text(render_html(board, out.resolve()))
    return page
