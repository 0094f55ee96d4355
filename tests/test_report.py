"""The run report: notebook pages, the figure index, and every image and link of it in a real browser.

The browser checks open the pages in headless Chromium (Debian's ``chromium``; ``make test`` installs it
when run as root) with a small checker script appended to a copy of each page: after the page has
loaded it records every image's ``naturalWidth`` and fetches every link (XHR on file://), and
``--dump-dom`` hands the result back.
"""
from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nbformat  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output  # noqa: E402

from histo_utils import report, run  # noqa: E402
from histo_utils.plotting import save_figure  # noqa: E402

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


# ---------------------------------------------------------------- a toy run directory
def _toy_notebook(out: Path, stem: str, title: str, figures: dict[str, str], *, error: bool = False) -> None:
    """An executed notebook ``<out>/notebooks/<stem>.ipynb`` whose cells saved ``figures`` (name -> heading)."""
    cells = [new_markdown_cell(f"# {title}\nWhat this toy notebook does, with $x^2$ in it."),
             new_code_cell('out_dir = "x"  # output', execution_count=1)]
    for k, (name, heading) in enumerate(figures.items(), start=2):
        fig, ax = plt.subplots(figsize=(2.5, 1.8))
        ax.plot([0, 1, 2], [k, 0, k])
        save_figure(fig, pd.DataFrame({"x": [0, 1, 2], "y": [k, 0, k]}), out, stem, name)
        png = (out / "figures" / stem / f"{name}.png").read_bytes()
        plt.close(fig)
        cells.append(new_markdown_cell(f"## {heading}\nSome text about it."))
        cells.append(new_code_cell(f'save_figure(fig, table, out_dir, NB,\n            "{name}")', execution_count=k,
                                   outputs=[new_output("display_data",
                                                       data={"image/png": base64.b64encode(png).decode()})]))
    if error:
        cells.append(new_code_cell("1 / 0", execution_count=99, outputs=[new_output(
            "error", ename="ZeroDivisionError", evalue="division by zero", traceback=[])]))
    nb = new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                            "language": "python"}})
    (out / "notebooks").mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(out / "notebooks" / f"{stem}.ipynb"))


@pytest.fixture
def toy_run(tmp_path):
    out = tmp_path / "run"
    _toy_notebook(out, "00_first", "00 · The *first* toy",
                  {"curve_a": "A curve, planted", "r vs #genes (n=3)": "Odd names"})  # '#', ' ': quoted links
    _toy_notebook(out, "01_second", "01 · The second toy", {"curve_b": "Another curve"}, error=True)
    # a figure folder of a notebook that has no executed copy is not reported
    save_figure(plt.figure(), pd.DataFrame({"x": [1]}), out, "02_not_run", "orphan")
    plt.close("all")
    return out


# ---------------------------------------------------------------- link checks in Python
class _Refs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs: list[tuple[str, str, dict]] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for key in ("href", "src"):
            if a.get(key) is not None:
                self.refs.append((tag, a[key], a))


def _refs(page: Path) -> list[tuple[str, str, dict]]:
    p = _Refs()
    p.feed(page.read_text(encoding="utf-8"))
    return p.refs


def _local_targets(page: Path, root: Path) -> list[Path]:
    """Every href/src of a page as a file; fails on a link outside ``root`` or to a missing file."""
    targets = []
    for tag, ref, attrs in _refs(page):
        parts = urlsplit(ref)
        if ref.startswith("#") or parts.scheme == "data":
            continue
        if tag == "script" and "async" in attrs and "mathjax" in ref.lower():
            continue  # the notebook pages' optional MathJax (formulas stay TeX offline)
        assert not parts.scheme and not parts.netloc and not ref.startswith("/"), f"{page.name}: not relative: {ref}"
        target = (page.parent / unquote(parts.path)).resolve()
        assert target.is_relative_to(root.resolve()), f"{page.name}: {ref} leaves the report folder"
        assert target.is_file(), f"{page.name}: broken link {ref} -> {target}"
        targets.append(target)
    return targets


# ---------------------------------------------------------------- browser checks
_CHECKER = """<script>
window.addEventListener('load', async () => {
  const images = [...document.images].map(i => ({src: (i.getAttribute('src') || '').slice(0, 80),
                                                  ok: i.complete && i.naturalWidth > 0}));
  const get = (href) => new Promise(done => {
    const x = new XMLHttpRequest();
    x.onload = () => done({href, ok: x.responseText.length > 0});
    x.onerror = () => done({href, ok: false});
    try { x.open('GET', href); x.send(); } catch (e) { done({href, ok: false}); }
  });
  const hrefs = [...document.querySelectorAll('a[href]')].map(a => a.getAttribute('href'))
                .filter(h => !h.startsWith('#'));
  const links = await Promise.all(hrefs.map(get));
  const pre = document.createElement('pre');
  pre.id = 'histo-check';
  pre.textContent = JSON.stringify({images, links});
  document.body.appendChild(pre);
});
</script>"""


def _browser_check(page: Path, tmp: Path) -> dict:
    """Open ``page`` (a copy with the checker appended, beside it) in headless Chromium; the checker's result."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"Chromium not found at {CHROMIUM}: install it with `apt-get install chromium` (Debian; "
                    "`make test` does it when run as root) or set CHROMIUM=/path/to/chromium")
    probe = page.with_name(f".check.{page.name}")
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", _CHECKER + "</body>"), encoding="utf-8")
    profile = tmp / f"chromium-profile-{page.stem}"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--allow-file-access-from-files",
           "--virtual-time-budget=20000", "--dump-dom", probe.as_uri()]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    finally:
        probe.unlink()
    m = re.search(r'<pre id="histo-check">(.*?)</pre>', res.stdout, re.S)
    assert m, f"the checker did not report for {page} (exit {res.returncode}):\n{res.stderr[-2000:]}"
    import html
    return json.loads(html.unescape(m.group(1)))


def _assert_all_load(result: dict, page: Path) -> None:
    bad_img = [i["src"] for i in result["images"] if not i["ok"]]
    bad_link = [x["href"] for x in result["links"] if not x["ok"]]
    assert not bad_img, f"{page.name}: images that did not load: {bad_img}"
    assert not bad_link, f"{page.name}: links that did not resolve: {bad_link}"


# ---------------------------------------------------------------- tests
def test_report_lists_notebooks_and_figures_with_captions(toy_run):
    index = report.write_report(toy_run)
    assert index == toy_run.resolve() / "report" / "index.html"
    text = index.read_text(encoding="utf-8")
    # one line per notebook, titled from its first markdown cell, linked to its page
    assert 'href="notebooks/00_first.html">00 · The first toy</a>' in text
    assert 'href="notebooks/01_second.html">01 · The second toy</a>' in text
    assert "failed in cell 99: ZeroDivisionError" in text
    # captions from the heading above the cell that saved the figure; the figure name beside it
    assert "A curve, planted <code>curve_a</code>" in text and "Another curve <code>curve_b</code>" in text
    assert "orphan" not in text and "02_not_run" not in text
    # every link and image is a relative path to an existing file inside report/
    root = index.parent
    targets = _local_targets(index, root)
    imgs = [t for t in targets if t.suffix == ".png"]
    assert len(imgs) == 2 * 3 and {t.suffix for t in targets} == {".html", ".png", ".csv"}  # 3 figures, img + link
    for t in (t for t in targets if t.suffix == ".png"):
        assert t.with_suffix(".csv").is_file()
    for page in (root / "notebooks").glob("*.html"):
        _local_targets(page, root)
        page_text = page.read_text(encoding="utf-8")
        assert "require.min.js" not in page_text and "mermaid" not in page_text.lower()
        external = [ref for tag, ref, a in _refs(page) if urlsplit(ref).scheme in ("http", "https")]
        assert all("mathjax" in r.lower() for r in external), external
        assert all("async" in a for tag, ref, a in _refs(page) if tag == "script" and "mathjax" in ref.lower())
    # output images of the notebook pages are embedded
    assert page_text.count('src="data:image/png;base64,') >= 1


def test_report_is_incremental_and_drops_stale_files(toy_run, caplog):
    report.write_report(toy_run)
    page = toy_run / "report" / "notebooks" / "00_first.html"
    mtime = page.stat().st_mtime_ns
    caplog.clear()
    with caplog.at_level("INFO", logger="histo_utils.report"):
        report.write_report(toy_run)
    assert page.stat().st_mtime_ns == mtime and "rendered" not in caplog.text
    assert re.search(r"report: .*index.html \(2 notebooks, 3 figures, [0-9.]+ MB", caplog.text)
    (toy_run / "notebooks" / "01_second.ipynb").unlink()
    (toy_run / "figures" / "00_first" / "curve_a.png").unlink()
    index = report.write_report(toy_run, mathjax_url=None)
    assert not (toy_run / "report" / "notebooks" / "01_second.html").exists()
    assert not (toy_run / "report" / "figures" / "01_second").exists()
    assert not (toy_run / "report" / "figures" / "00_first" / "curve_a.png").exists()
    assert "mathjax" not in page.read_text(encoding="utf-8").lower()  # re-rendered: the page format changed
    _local_targets(index, index.parent)
    # a notebook that cannot be read (half-written) is listed, without a link to a page it does not have
    (toy_run / "notebooks" / "02_broken.ipynb").write_text("{not json")
    index = report.write_report(toy_run)
    assert "<li>02_broken <span" in index.read_text(encoding="utf-8")
    _local_targets(index, index.parent)


def test_report_loads_in_a_browser_after_moving_it(toy_run, tmp_path):
    report.write_report(toy_run)
    moved = tmp_path / "elsewhere" / "my report"  # a space, and nothing of the run beside it
    shutil.copytree(toy_run / "report", moved)
    result = _browser_check(moved / "index.html", tmp_path)
    assert len(result["images"]) == 3 and len(result["links"]) >= 2 + 3 * 2
    _assert_all_load(result, moved / "index.html")
    for page in sorted((moved / "notebooks").glob("*.html")):
        result = _browser_check(page, tmp_path)
        assert result["images"], f"{page.name}: no images"
        _assert_all_load(result, page)


def test_browser_check_catches_a_missing_image(toy_run, tmp_path):
    index = report.write_report(toy_run)
    (index.parent / "figures" / "01_second" / "curve_b.png").unlink()
    (index.parent / "figures" / "01_second" / "curve_b.csv").unlink()
    result = _browser_check(index, tmp_path)
    assert [i["src"] for i in result["images"] if not i["ok"]] == ["figures/01_second/curve_b.png"]
    assert sorted(x["href"] for x in result["links"] if not x["ok"]) == \
        ["figures/01_second/curve_b.csv", "figures/01_second/curve_b.png"]
    with pytest.raises(AssertionError, match="broken link"):
        _local_targets(index, index.parent)


def test_runner_writes_the_report_unless_told_not_to(tmp_path, monkeypatch, caplog):
    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    params = new_code_cell('out_dir: str = "x"  # output\n')
    params.metadata["tags"] = ["parameters"]
    body = ("import matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt, pandas as pd\n"
            "from histo_utils.plotting import save_figure\nfig = plt.figure(figsize=(2, 2)); plt.plot([1, 2])\n"
            "save_figure(fig, pd.DataFrame({'y': [1, 2]}), out_dir, '00_fig', 'line')\n")
    nb = new_notebook(cells=[new_markdown_cell("# 00 · A figure\n"), params, new_markdown_cell("## The line"),
                             new_code_cell(body)],
                      metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    nbformat.write(nb, str(nbdir / "00_fig.ipynb"))
    monkeypatch.setattr(run, "NOTEBOOKS_DIR", nbdir)
    prof = tmp_path / "p.yaml"
    prof.write_text("notebooks:\n  00_fig: {}\n")
    out = tmp_path / "out"
    assert run.main(["--params", str(prof), "--out", str(out), "--no-report"]) == 0
    assert (out / "notebooks" / "00_fig.ipynb").exists() and not (out / "report").exists()
    with caplog.at_level("INFO"):
        assert run.main(["--params", str(prof), "--out", str(out)]) == 0
    index = out / "report" / "index.html"
    text = index.read_text(encoding="utf-8")
    assert "00 · A figure</a>" in text and "The line <code>line</code>" in text and "finished 20" in text
    assert re.search(r"report: .*index.html \(1 notebooks, 1 figures, [0-9.]+ MB", caplog.text)
    _local_targets(index, index.parent)
