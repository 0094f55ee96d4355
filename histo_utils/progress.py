"""Live progress of the notebooks the runner executes.

The runner (:mod:`histo_utils.run`) gives papermill a :class:`NotebookProgress` as its cell hooks
(``on_cell_start``/``on_cell_executed``) and as the sink of the kernel's stderr. It knows which cell
runs, in which section (the last markdown heading seen), for how long, and the last line of the
inner tqdm bar (slides, epochs, blocks). On a terminal it redraws one status line; in a log file it
writes a line when the section changes and a heartbeat every ``heartbeat`` seconds, so a long run is
visible without a line per tqdm update.

The estimate comes from the previous run's stamp (``<out>/.runner/<notebook>.json``): its total
seconds and, when recorded, the seconds of each cell.

:class:`QuietPapermill` drops papermill's per-notebook chatter ("Input Notebook: ..."); the kernel's
"running over TCP without encryption" warning is silenced by starting the kernel with
``--IPKernelApp.log_level=ERROR`` (:data:`KERNEL_ARGUMENTS`).
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import sys
import time
from typing import Callable, Sequence, TextIO

log = logging.getLogger("histo_utils.run")

#: Extra arguments of the kernels the runner starts: no TCP warning, text tqdm bars (read by the runner).
KERNEL_ARGUMENTS = [
    "--IPKernelApp.log_level=ERROR",
    "--IPKernelApp.exec_lines=['import histo_utils.progress as _hp; _hp.use_text_bars()']",
]

_NOISE = ("Input Notebook:", "Output Notebook:", "Working directory:", "Executing notebook with kernel")
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)
# a tqdm bar: "desc:  40%|████      | 2/5 [00:00<00:01, 3.3it/s]" or "3it [00:01, 2.9it/s]"
_LOG = re.compile(r"^(?:INFO|WARNING)\s+(\S+:\s.+)$")
_BAR = re.compile(r"(\d+%\|)|(\d+(/\d+)?\s*(it|[a-zA-Z]+)?\s*\[\d+:\d+)")


class QuietPapermill(logging.Filter):
    """Drop papermill's per-notebook INFO lines (input/output paths, working directory, kernel name)."""

    def filter(self, record: logging.LogRecord) -> bool:  # noqa: D102
        if record.levelno > logging.INFO:
            return True
        return not str(record.getMessage()).lstrip().startswith(_NOISE)


def use_text_bars() -> None:
    """Make ``tqdm.auto`` draw text bars on stderr (run in the runner's kernels, not in JupyterLab).

    With ipywidgets installed, ``tqdm.auto`` draws widgets in a kernel; the runner reads the kernel's
    stderr, so it asks for the text bars instead. Must run before the notebook imports anything.
    """
    import tqdm.asyncio
    import tqdm.auto
    import tqdm.autonotebook

    tqdm.auto.tqdm = tqdm.autonotebook.tqdm = tqdm.asyncio.tqdm
    tqdm.auto.trange = tqdm.autonotebook.trange = tqdm.asyncio.trange


def heading_of(markdown: str) -> str | None:
    """The last markdown heading of a cell's source (without the ``#``), or None when it has none."""
    found = _HEADING.findall(markdown or "")
    return found[-1].strip() if found else None


def last_bar(text: str) -> str | None:
    """The last tqdm bar drawn in a chunk of stderr (bars redraw with ``\\r``), or None when none is."""
    for part in reversed(re.split(r"[\r\n]", text or "")):
        part = part.strip()
        if part and _BAR.search(part):
            return part
    return None


def last_log_line(text: str) -> str | None:
    """The last ``INFO``/``WARNING`` logging line in a chunk of stderr, without its level, or None.

    The notebooks log as ``INFO histo_utils.training: epoch 3: ...`` (``logging.basicConfig`` format).
    """
    for line in reversed((text or "").splitlines()):
        m = _LOG.match(line.strip())
        if m:
            return m.group(1)
    return None


def format_seconds(seconds: float | None) -> str:
    """``m:ss`` (or ``h:mm:ss``) for a number of seconds; ``?`` for None."""
    if seconds is None:
        return "?"
    s = int(round(max(seconds, 0.0)))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def estimate_remaining(elapsed: float, cell_index: int, cell_elapsed: float, *,
                       previous_seconds: float | None = None,
                       previous_cells: Sequence[float] | None = None) -> float | None:
    """Seconds still to go, from the previous run of the same notebook.

    Parameters
    ----------
    elapsed : float
        Seconds since the notebook started.
    cell_index : int
        Index of the running cell (papermill's, parameters cell injected).
    cell_elapsed : float
        Seconds since the running cell started.
    previous_seconds : float, optional
        The previous run's total.
    previous_cells : sequence of float, optional
        The previous run's seconds per cell, same indexing; preferred when it covers ``cell_index``.

    Returns
    -------
    float or None
        None without a previous run.
    """
    if previous_cells is not None and 0 <= cell_index < len(previous_cells):
        rest = sum(previous_cells[cell_index + 1:])
        return rest + max(previous_cells[cell_index] - cell_elapsed, 0.0)
    if previous_seconds is not None:
        return max(previous_seconds - elapsed, 0.0)
    return None


def format_status(stem: str, *, cell: int, n_cells: int, section: str | None, elapsed: float,
                  remaining: float | None, bar: str | None = None, width: int | None = None) -> str:
    """One status line: notebook, cell, section, elapsed, estimate left, inner bar.

    Example: ``02_training  cell 9/21  § Training  3:12 elapsed, ~9:33 left  | epochs:  50%|█████ | 4/8``.
    Cut to ``width`` characters when given.
    """
    if remaining is None:
        left = "no estimate (first run)"
    elif remaining < 0.5:
        left = "longer than the previous run"
    else:
        left = f"~{format_seconds(remaining)} left"
    text = f"{stem}  cell {cell + 1}/{max(n_cells, cell + 1)}"
    if section:
        text += f"  § {section}"
    text += f"  {format_seconds(elapsed)} elapsed, {left}"
    if bar:
        text += f"  | {bar}"
    if width is not None and len(text) > width:
        text = text[:max(width - 1, 0)] + "…"
    return text


class NotebookProgress:
    """Follow one notebook's execution and show it (papermill cell hooks + stderr sink).

    Parameters
    ----------
    stem : str
        The notebook's name (``02_training``).
    n_cells : int
        Cells papermill will run (the input's cells plus the injected parameters cell).
    previous_seconds, previous_cells : optional
        The previous run's total and per-cell seconds (for the estimate).
    stream : text stream, optional
        Where a terminal status line is drawn (default ``sys.stderr``).
    live : bool, optional
        Redraw one line (terminal) rather than log; default: whether ``stream`` is a TTY.
    heartbeat : float
        In log mode, seconds between two status lines within one section.
    clock : callable
        Monotonic seconds (injected by tests).
    """

    def __init__(self, stem: str, n_cells: int, *, previous_seconds: float | None = None,
                 previous_cells: Sequence[float] | None = None, stream: TextIO | None = None,
                 live: bool | None = None, heartbeat: float = 60.0,
                 clock: Callable[[], float] = time.monotonic):
        self.stem = stem
        self.n_cells = n_cells
        self.previous_seconds = previous_seconds
        self.previous_cells = list(previous_cells) if previous_cells else None
        self.stream = stream if stream is not None else sys.stderr
        self.live = bool(live) if live is not None else bool(getattr(self.stream, "isatty", lambda: False)())
        self.heartbeat = heartbeat
        self.clock = clock
        self.t0 = clock()
        self.cell = 0
        self.cell_t0 = self.t0
        self.section: str | None = None
        self.bar: str | None = None
        self.cell_seconds: list[float] = []
        self._last_shown = -1e18
        self._shown_section: str | None = None
        self._drawn = False

    # papermill / nbclient hooks -------------------------------------------------------------
    def on_cell_start(self, cell, cell_index: int, **_) -> None:
        """Hook: a cell starts (markdown cells too: their headings name the section)."""
        now = self.clock()
        self.cell, self.cell_t0, self.bar = cell_index, now, None
        if cell.get("cell_type") == "markdown":
            self.section = heading_of(cell.get("source", "")) or self.section
        elif cell.get("source", "").strip():
            self.show()

    def on_cell_executed(self, cell, cell_index: int, **_) -> None:
        """Hook: a code cell has run (its reply came back); records its seconds."""
        while len(self.cell_seconds) < cell_index:
            self.cell_seconds.append(0.0)
        self.cell_seconds.append(self.clock() - self.cell_t0)

    # stderr sink ------------------------------------------------------------------------------
    def write(self, text: str) -> int:
        """Sink of the kernel's stderr: keep the last tqdm bar or logging line; other text goes to the debug log."""
        bar = last_bar(text)
        if bar is None:
            bar = last_log_line(text)
        if bar is not None:
            self.bar = bar
            self.show()
        elif text.strip():
            log.debug("%s stderr: %s", self.stem, text.rstrip())
        return len(text)

    def flush(self) -> None:  # noqa: D102 - file-like
        pass

    # display ------------------------------------------------------------------------------------
    def status(self, width: int | None = None) -> str:
        """The current status line."""
        now = self.clock()
        remaining = estimate_remaining(now - self.t0, self.cell, now - self.cell_t0,
                                       previous_seconds=self.previous_seconds,
                                       previous_cells=self.previous_cells)
        return format_status(self.stem, cell=self.cell, n_cells=self.n_cells, section=self.section,
                             elapsed=now - self.t0, remaining=remaining, bar=self.bar, width=width)

    def show(self) -> None:
        """Redraw the terminal line (at most 4 times a second), or log on a new section / heartbeat."""
        now = self.clock()
        if self.live:
            if now - self._last_shown < 0.25:
                return
            width = shutil.get_terminal_size((120, 20)).columns - 1
            self.stream.write("\r\x1b[K" + self.status(width))
            self.stream.flush()
            self._drawn = True
        else:
            if self.section == self._shown_section and now - self._last_shown < self.heartbeat:
                return
            self._shown_section = self.section
            log.info("%s", self.status())
        self._last_shown = now

    def close(self) -> list[float]:
        """End the display (clear the terminal line); returns the seconds of each cell."""
        if self.live and self._drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
        return self.cell_seconds


def section_seconds(executed: str | os.PathLike) -> list[tuple[str, float]]:
    """Seconds spent in each section of an executed notebook, from papermill's per-cell durations.

    Parameters
    ----------
    executed
        A notebook executed by papermill (its cells carry ``metadata.papermill.duration``).

    Returns
    -------
    list of (section, seconds), in notebook order; cells before the first heading count under ``(start)``.
    """
    import nbformat

    nb = nbformat.read(str(executed), as_version=4)
    out: list[tuple[str, float]] = []
    section = "(start)"
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            section = heading_of(cell.source) or section
            continue
        secs = float(cell.metadata.get("papermill", {}).get("duration") or 0.0)
        if out and out[-1][0] == section:
            out[-1] = (section, out[-1][1] + secs)
        else:
            out.append((section, secs))
    return out
