"""The HTML leaderboard in a real browser: Debian's chromium driven by Playwright.

Sorting works (clicking a header reorders the rows by the cells' numbers, missing values last,
both directions), every link and image resolves, and the page logs no console error. Skips with
the reason where Playwright or a chromium executable is missing; `scripts/ensure-browser` (run by
the README's test command, hence by CI) installs both.
"""
import functools
import math
import os
import shutil
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from benchmarks.leaderboard import load_records, write_leaderboard

RECORDS = Path(__file__).parent / "data" / "leaderboard" / "records"
CHROMIUM = os.environ.get("DGM_BENCH_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"

sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (scripts/ensure-browser)")
if not Path(CHROMIUM).is_file():
    pytest.skip(f"no chromium executable at {CHROMIUM} (scripts/ensure-browser installs Debian's chromium)",
                allow_module_level=True)

PNG_1x1 = bytes.fromhex("89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
                        "0000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser")
    root = tmp / "records"
    shutil.copytree(RECORDS, root)
    (root / "samples_vae.png").write_bytes(PNG_1x1)  # a figure published beside the records
    runs, _ = load_records(root)
    spec = {r.fingerprint for r in runs if r.record["config"]["trainer"]["max_epochs"] == 10}
    write_leaderboard(root, tmp / "md", current=spec, html=tmp / "site")
    # served over HTTP as a static host (or a clone opened through one) would: links are checked by status
    handler = functools.partial(_QuietHandler, directory=str(tmp))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/site/index.html"
    server.shutdown()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def page(site):
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        pg = browser.new_page()
        errors: list[str] = []
        pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        pg.on("pageerror", lambda e: errors.append(str(e)))
        pg.goto(site)
        pg.errors = errors
        yield pg
        browser.close()


def column_values(page, table: int, col: int) -> list[float]:
    return page.evaluate(
        """([t, c]) => Array.from(document.querySelectorAll('table.sortable')[t].tBodies[0].rows)
                         .map(r => parseFloat(r.cells[c].getAttribute('data-value')))""", [table, col])


def test_clicking_a_header_sorts_by_the_number_missing_values_last(page):
    header = page.locator("table.sortable").first.locator("th").nth(2)  # the headline metric
    assert "nll_k5000" in header.inner_text()
    for direction, expected_order in (("ascending", 1), ("descending", -1)):
        header.click()
        assert header.get_attribute("aria-sort") == direction
        values = column_values(page, 0, 2)
        numbers = [v for v in values if not math.isnan(v)]
        assert len(numbers) >= 3 and numbers == sorted(numbers, reverse=expected_order < 0)
        assert all(math.isnan(v) for v in values[len(numbers):])  # the GAN (no likelihood) stays last
    assert page.errors == []


def test_every_link_and_image_resolves_and_no_console_errors(page, site):
    hrefs = page.eval_on_selector_all("a[href]", "els => els.map(e => e.href)")
    images = page.eval_on_selector_all("img", "els => els.map(e => [e.currentSrc, e.naturalWidth])")
    assert len(hrefs) > 10 and images
    for url in hrefs:
        assert url.startswith(site.rsplit("/site/", 1)[0]), url  # relative links: the page works from a clone
        assert page.context.request.get(url).ok, url
    assert all(width > 0 for _, width in images), images  # the browser decoded every image
    assert page.errors == []
