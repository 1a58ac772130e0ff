"""The static HTML leaderboard, read back with Python's html.parser: one table per dataset and
protocol with direction arrows, the same numbers and bold as the Markdown, a sort key per cell, and
links that resolve to the records. (The same page in a real browser: test_leaderboard_browser.py.)"""
import shutil
from html.parser import HTMLParser
from pathlib import Path

from benchmarks.cli import main
from benchmarks.leaderboard import load_records, write_leaderboard

RECORDS = Path(__file__).parent / "data" / "leaderboard" / "records"


class Page(HTMLParser):
    """Tables as lists of rows of (text, attributes, links, bold); every href on the page."""

    def __init__(self) -> None:
        super().__init__()
        self.tables, self.hrefs, self.scripts = [], [], 0
        self._cell, self._in_seed = None, False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self.tables.append({"class": attrs.get("class"), "header": [], "rows": []})
        elif tag == "tr" and self.tables:
            self.tables[-1]["rows"].append([])
        elif tag in ("td", "th"):
            self._cell = {"tag": tag, "text": "", "attrs": attrs, "links": []}
        elif tag == "a":
            self._in_seed = attrs.get("class") == "seed"
            self.hrefs.append(attrs["href"])
            if self._cell is not None:
                self._cell["links"].append(attrs["href"])
        elif tag == "img":
            self.hrefs.append(attrs["src"])
        elif tag == "script":
            self.scripts += 1

    def handle_endtag(self, tag):
        if tag == "a":
            self._in_seed = False
        if tag in ("td", "th") and self._cell is not None:
            table = self.tables[-1]
            (table["header"] if tag == "th" else table["rows"][-1]).append(self._cell)
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None and not self._in_seed:  # the value, not the links to each seed's record
            self._cell["text"] += data


def test_html_page_tables_arrows_bold_and_links(tmp_path):
    root = tmp_path / "records"
    shutil.copytree(RECORDS, root)
    (root / "broken").mkdir()
    (root / "broken" / "record.json").write_text("[]")
    (root / "samples_vae.png").write_bytes(b"\x89PNG\r\n\x1a\n")  # a figure published beside the records
    site = tmp_path / "site"
    runs, _ = load_records(root)
    spec = {r.fingerprint for r in runs if r.record["config"]["trainer"]["max_epochs"] == 10}  # as in test_leaderboard
    write_leaderboard(root, tmp_path / "md", current=spec, html=site)
    page = Page()
    page.feed((site / "index.html").read_text())
    assert page.scripts == 1
    # two spec tables (dynamic, fixed) and the table apart for the 2-epoch record: all sortable
    assert [t["class"] for t in page.tables] == ["sortable"] * 3
    dynamic = page.tables[0]
    header = [c["text"].strip() for c in dynamic["header"]]
    assert header[:3] == ["configuration", "n", "nll_k5000 ↓ (nats)"] and header[-2:] == ["epochs", "wall (s)"]
    assert [c["attrs"]["data-direction"] for c in dynamic["header"][2:-2]] == ["lower"] * 4
    rows = {r[0]["text"]: r for r in dynamic["rows"][1:]}  # the first row is the header's
    assert sorted(rows) == ["gan", "iwae", "iwae (objective.k=50)", "vae"]
    k50 = rows["iwae (objective.k=50)"][2]
    assert k50["text"] == "80.50 ± 6.35" and k50["attrs"].get("class") == "best" and k50["attrs"]["data-value"] == "80.5"
    assert len(k50["links"]) == 2  # one per seed
    assert rows["iwae"][2]["attrs"].get("class") is None and rows["gan"][2]["attrs"]["data-value"] == "NaN"
    # every link resolves to a file, the broken record included
    assert len(page.hrefs) > 10
    for href in page.hrefs:
        assert not href.startswith(("/", "http")), href  # relative: works from a clone
        assert (site / href).resolve().is_file(), href
    assert any(h.endswith("broken/record.json") for h in page.hrefs)
    assert sum(h.endswith("samples_vae.png") for h in page.hrefs) == 2  # the image and its link


def test_html_from_the_command_line(tmp_path):
    assert main(["leaderboard", str(RECORDS), "--out", str(tmp_path / "md"), "--html", str(tmp_path / "site")]) == 0
    page = Page()
    page.feed((tmp_path / "site" / "index.html").read_text())
    assert len(page.tables) == 2  # no spec given: every configuration is a row of its table
    assert main(["leaderboard", str(tmp_path / "none"), "--html", str(tmp_path / "site2")]) == 2


def test_sort_script_parses():
    """The page's script is valid JavaScript (node's parser, where node is installed)."""
    import shutil as sh
    import subprocess

    import pytest

    from benchmarks.leaderboard_html import SCRIPT

    node = sh.which("node")
    if node is None:
        pytest.skip("node is not installed: the sort script's syntax is not checked")
    out = subprocess.run([node, "--check", "-"], input=SCRIPT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
