"""An HTML report of a run: every executed notebook rendered, and an index of all figures.

Written by the runner after the notebooks (``python -m histo_utils.run``; ``--no-report`` skips it), or
on its own with ``python -m histo_utils.report <out>``. Layout::

    <out>/report/index.html                  notebook list + every figure with caption and data link
    <out>/report/notebooks/<notebook>.html   each executed notebook (<out>/notebooks/<notebook>.ipynb)
    <out>/report/figures/<notebook>/         copies of <out>/figures/<notebook>/*.png and their .csv

Every link is relative and every file the pages show is inside ``report/``, so the folder can be moved,
zipped or opened from a file manager without a server or a network. The notebook pages embed their
images; the only outside resource they name is MathJax, loaded asynchronously: without a network the
pages render the same, with formulas as their TeX source (``mathjax_url=None`` drops it).

A figure's caption is the heading of the notebook section whose cell saved it (the nearest markdown
heading above the code cell that names the figure), with the figure's name; a figure no cell names is
captioned by its name alone.
"""
from __future__ import annotations

import argparse
import filecmp
import hashlib
import html
import json
import logging
import re
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence
from urllib.parse import quote

from . import products
from .io import atomic_open, atomic_path, write_json

log = logging.getLogger(__name__)

__all__ = ["write_report", "notebook_title", "figure_captions", "NotebookEntry", "Figure",
           "MATHJAX_URL"]

#: MathJax for the notebook pages (loaded with ``async``: never blocks a page offline).
MATHJAX_URL = "https://cdnjs.cloudflare.com/ajax/libs/mathjax/2.7.7/latest.js?config=TeX-AMS_CHTML-full,Safe"

_TEMPLATE_NAME = "histo_utils_report.html.j2"
# nbconvert's 'lab' page without the scripts it would fetch from CDNs: require.js (only widgets use it),
# the widget manager and mermaid (no notebook here uses either); MathJax stays, but asynchronous.
_TEMPLATE = """{%- extends 'index.html.j2' -%}
{% from 'mathjax.html.j2' import mathjax %}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block html_head_js_mathjax -%}
{%- if resources.mathjax_url -%}
{{ mathjax(resources.mathjax_url) | replace('<script src=', '<script async src=') }}
{%- endif -%}
{%- endblock html_head_js_mathjax -%}
"""
_FORMAT = "1"  # bump to re-render every notebook page after a change of the page format


@dataclass
class Figure:
    """One figure of a notebook: its PNG, its data table and its caption."""

    name: str
    png: Path
    csv: Path | None
    caption: str
    order: int = 10**9


@dataclass
class NotebookEntry:
    """One executed notebook of the run, as the index lists it."""

    stem: str
    ipynb: Path
    title: str
    status: str
    figures: list[Figure] = field(default_factory=list)
    page: bool = False  # rendered to report/notebooks/<stem>.html


# --------------------------------------------------------------------------
# reading executed notebooks
# --------------------------------------------------------------------------
def _plain(markdown: str) -> str:
    """Markdown of a heading as plain text: no '#', emphasis, code ticks, link targets or '$'."""
    text = re.sub(r"^\s*#+\s*", "", markdown.strip())
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"[*`$]|(?<!\w)_|_(?!\w)", "", text)
    return re.sub(r"\s+", " ", text).strip()


def notebook_title(nb, default: str) -> str:
    """The first line of a notebook's first markdown cell, as plain text (``default`` if there is none).

    Parameters
    ----------
    nb
        A notebook read with ``nbformat.read(..., as_version=4)``.
    default
        The title when the notebook has no markdown cell (e.g. its file stem).
    """
    for cell in nb.cells:
        if cell.cell_type == "markdown" and cell.source.strip():
            return _plain(cell.source.strip().splitlines()[0]) or default
    return default


def _status(nb, stamp: Path) -> str:
    for i, cell in enumerate(nb.cells):
        for output in cell.get("outputs", []) if cell.cell_type == "code" else []:
            if output.get("output_type") == "error":
                n = cell.get("execution_count")
                return f"failed in cell {n if n is not None else i}: {output.get('ename', 'error')}"
    if stamp.exists():
        try:
            return "finished " + str(json.loads(stamp.read_text()).get("finished", "")).replace("T", " ")
        except (OSError, ValueError):
            pass
    return ""


def figure_captions(nb, names: Sequence[str]) -> dict[str, tuple[str, int]]:
    """Caption and position of each named figure, from the notebook that saved it.

    A figure is found in the first code cell whose source names it as a string literal (``"name"`` or
    ``'name'``); its caption is the nearest markdown heading above that cell (not the notebook's title).

    Parameters
    ----------
    nb
        The executed notebook (``nbformat`` v4).
    names
        Figure names (PNG stems).

    Returns
    -------
    dict
        ``name -> (heading, cell index)`` for the figures found; a figure found under no heading has an
        empty heading; figures no cell names are left out.
    """
    title_cell = next((i for i, c in enumerate(nb.cells) if c.cell_type == "markdown" and c.source.strip()), None)
    found: dict[str, tuple[str, int]] = {}
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        for name in names:
            if name in found or (f'"{name}"' not in cell.source and f"'{name}'" not in cell.source):
                continue
            heading = ""
            for j in range(i - 1, -1, -1):
                prev = nb.cells[j]
                if prev.cell_type != "markdown" or j == title_cell:
                    continue
                lines = [ln for ln in prev.source.splitlines() if re.match(r"^\s{0,3}#{1,6}\s", ln)]
                if lines:
                    heading = _plain(lines[-1])
                    break
            found[name] = (heading, i)
    return found


def _humanise(name: str) -> str:
    text = re.sub(r"[_\s]+", " ", name).strip()
    return text[:1].upper() + text[1:]


def _figures(out: Path, stem: str, nb) -> list[Figure]:
    folder = products.figure_folder(out, stem)
    pngs = sorted(folder.glob("*.png")) if folder.is_dir() else []
    captions = figure_captions(nb, [p.stem for p in pngs]) if nb is not None else {}
    figures = []
    for png in pngs:
        heading, order = captions.get(png.stem, ("", 10**9))
        csv = png.with_suffix(".csv")
        if not csv.exists():
            log.warning("figure %s has no data table beside it (%s)", png, csv.name)
        figures.append(Figure(name=png.stem, png=png, csv=csv if csv.exists() else None,
                              caption=heading or _humanise(png.stem), order=order))
    figures.sort(key=lambda f: (f.order, f.name))
    return figures


# --------------------------------------------------------------------------
# rendering
# --------------------------------------------------------------------------
class _NoAltTextWarning(logging.Filter):
    """Drops nbconvert's warning about matplotlib outputs without alt text (one per notebook, not actionable)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Alternative text is missing" not in str(record.msg)


_nbconvert_log = log.getChild("nbconvert")
_nbconvert_log.addFilter(_NoAltTextWarning())


def _exporter(mathjax_url: str | None):
    import jinja2
    from nbconvert import HTMLExporter

    return HTMLExporter(template_name="lab", template_file=_TEMPLATE_NAME, embed_images=True,
                        extra_loaders=[jinja2.DictLoader({_TEMPLATE_NAME: _TEMPLATE})],
                        mathjax_url=mathjax_url or "", log=_nbconvert_log)


def _render(nb, ipynb: Path, title: str, exporter) -> str:
    resources = {"metadata": {"name": title, "path": str(ipynb.parent)}}
    body, _ = exporter.from_notebook_node(nb, resources=resources)
    return body


def _copy(src: Path, dest: Path) -> None:
    if dest.exists() and filecmp.cmp(src, dest, shallow=False):
        return
    with atomic_path(dest) as tmp:
        shutil.copyfile(src, tmp)


def _href(path: str) -> str:
    return html.escape(quote(path), quote=True)


_CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2em auto;
       max-width: 1200px; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; margin-bottom: .2em; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; }
.meta { color: #666; font-size: .9em; } .failed { color: #b00; }
ol.notebooks li { margin: .25em 0; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(340px, 1fr)); gap: 1.2em; }
figure { margin: 0; border: 1px solid #e3e3e3; border-radius: 4px; padding: .6em; background: #fff; }
figure img { max-width: 100%; height: auto; display: block; margin: 0 auto; }
figcaption { margin-top: .5em; font-size: .92em; } figcaption code { color: #555; }
"""


def _index_html(out: Path, entries: Sequence[NotebookEntry], generated: str) -> str:
    e = html.escape
    n_fig = sum(len(x.figures) for x in entries)
    parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>Report: {e(out.name)}</title>", f"<style>{_CSS}</style>", "</head>", "<body>",
             f"<h1>Report of the run <code>{e(out.name)}</code></h1>",
             f'<p class="meta">{len(entries)} notebooks, {n_fig} figures; written {e(generated)} from '
             f"<code>{e(str(out))}</code>. Every figure links to the CSV of the numbers it plots.</p>",
             "<h2>Notebooks</h2>", '<ol class="notebooks">']
    for x in entries:
        status = f' <span class="meta{" failed" if x.status.startswith("failed") else ""}">{e(x.status)}</span>' \
            if x.status else ""
        n = len(x.figures)
        figs = f' · <a href="#{_href(x.stem)}">{n} figure{"s" if n != 1 else ""}</a>' if n else ""
        title = f'<a href="{_href(f"notebooks/{x.stem}.html")}">{e(x.title)}</a>' if x.page else e(x.title)
        parts.append(f'<li>{title} <span class="meta"><code>{e(x.stem)}</code>{figs}</span>{status}</li>')
    parts.append("</ol>")
    for x in entries:
        if not x.figures:
            continue
        parts.append(f'<h2 id="{e(x.stem, quote=True)}">{e(x.title)}</h2>')
        link = f'<a href="{_href(f"notebooks/{x.stem}.html")}">the notebook</a> · ' if x.page else ""
        parts.append(f'<p class="meta">{link}figures of <code>figures/{e(x.stem)}/</code></p>')
        parts.append('<div class="grid">')
        for f in x.figures:
            png = f"figures/{x.stem}/{f.png.name}"
            data = (f' · <a href="{_href(f"figures/{x.stem}/{f.csv.name}")}">data (CSV)</a>' if f.csv
                    else ' · <span class="meta">no data table</span>')
            parts.append(
                f'<figure id="{e(x.stem + "/" + f.name, quote=True)}">'
                f'<a href="{_href(png)}"><img src="{_href(png)}" alt="{e(f.caption, quote=True)}"></a>'
                f"<figcaption>{e(f.caption)} <code>{e(f.name)}</code>{data}</figcaption></figure>")
        parts.append("</div>")
    parts += ["</body>", "</html>", ""]
    return "\n".join(parts)


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def write_report(out_dir: str | Path, *, mathjax_url: str | None = MATHJAX_URL) -> Path:
    """Write ``<out>/report/``: each executed notebook as HTML, and ``index.html`` with every figure.

    The notebooks are those with an executed copy in ``<out>/notebooks/``; their figures are
    ``<out>/figures/<notebook>/*.png``, each with the CSV of the same name. Pages of unchanged notebooks
    are not rendered again, and files of notebooks or figures that are gone are removed.

    Parameters
    ----------
    out_dir
        The run's output directory (``--out`` of the runner).
    mathjax_url
        Where the notebook pages load MathJax from, asynchronously; None: no MathJax.

    Returns
    -------
    Path
        ``<out>/report/index.html``.
    """
    import nbconvert
    import nbformat

    out = Path(out_dir).resolve()
    report = out / "report"
    t0 = time.perf_counter()
    ipynbs = sorted((out / "notebooks").glob("*.ipynb")) if (out / "notebooks").is_dir() else []
    if not ipynbs:
        log.warning("report: no executed notebooks in %s", out / "notebooks")
    manifest_path = report / ".rendered.json"
    try:
        manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    except ValueError:
        manifest = {}
    exporter = None
    entries: list[NotebookEntry] = []
    keep: set[Path] = set()
    rendered = {}
    for ipynb in ipynbs:
        stem = ipynb.stem
        try:
            nb = nbformat.read(str(ipynb), as_version=4)
        except Exception as exc:  # a half-written or foreign file: list it, do not stop the report
            log.warning("report: cannot read %s (%s); listed without a page", ipynb, exc)
            nb = None
        title = notebook_title(nb, stem) if nb is not None else stem
        status = _status(nb, out / ".runner" / f"{stem}.json") if nb is not None else "unreadable"
        entry = NotebookEntry(stem=stem, ipynb=ipynb, title=title, status=status, figures=_figures(out, stem, nb))
        page = report / "notebooks" / f"{stem}.html"
        if nb is not None:
            key = hashlib.sha256(ipynb.read_bytes() + "|".join(
                [_FORMAT, nbconvert.__version__, _TEMPLATE, title, mathjax_url or ""]).encode()).hexdigest()
            entry.page = page.exists() and manifest.get(stem) == key
            if not entry.page:
                exporter = exporter or _exporter(mathjax_url)
                try:
                    body = _render(nb, ipynb, title, exporter)
                except Exception as exc:  # one notebook nbconvert cannot render: list it, do not stop
                    log.warning("report: cannot render %s (%s: %s); listed without a page", ipynb,
                                type(exc).__name__, exc)
                else:
                    with atomic_open(page, "w", encoding="utf-8") as fh:
                        fh.write(body)
                    entry.page = True
                    log.info("report: rendered %s (%.1f MB)", page.name, page.stat().st_size / 1e6)
            if entry.page:
                rendered[stem] = key
                keep.add(page)
        for f in entry.figures:
            for src in (f.png, f.csv):
                if src is not None:
                    dest = report / "figures" / stem / src.name
                    _copy(src, dest)
                    keep.add(dest)
        entries.append(entry)
    index = report / "index.html"
    with atomic_open(index, "w", encoding="utf-8") as fh:
        fh.write(_index_html(out, entries, time.strftime("%Y-%m-%d %H:%M:%S")))
    write_json(rendered, manifest_path)
    keep |= {index, manifest_path}
    for sub in ("notebooks", "figures"):  # after the index: it never names a file that is gone
        for p in sorted((report / sub).rglob("*"), reverse=True) if (report / sub).is_dir() else []:
            if p.is_file() and p not in keep:
                p.unlink()
            elif p.is_dir() and not any(p.iterdir()):
                p.rmdir()
    n_fig = sum(len(x.figures) for x in entries)
    log.info("report: %s (%d notebooks, %d figures, %.1f MB in %s) in %.1f s", index, len(entries), n_fig,
             _size(report) / 1e6, report, time.perf_counter() - t0)
    return index


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m histo_utils.report <out>``: (re)write the report of a run directory."""
    ap = argparse.ArgumentParser(prog="python -m histo_utils.report", description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, help="the run's output directory (e.g. runs/default)")
    ap.add_argument("--no-mathjax", action="store_true", help="notebook pages without MathJax")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s",
                        datefmt="%H:%M:%S")
    if not (args.out / "notebooks").is_dir():
        log.error("%s has no notebooks/ folder: not a run directory", args.out)
        return 2
    write_report(args.out, mathjax_url=None if args.no_mathjax else MATHJAX_URL)
    return 0


if __name__ == "__main__":
    sys.exit(main())
