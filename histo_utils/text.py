"""Text of the Readings: a data value as Markdown that renders as itself.

Every Reading a notebook shows (``histo_utils.readings``, the readings that method modules attach to their
results, the planted-truth readings) formats data values (tissue names, IDs, gene symbols) through
:func:`md_text`, so a value from the data can never become HTML, a link or a formula in the rendered notebook or
report. This module imports nothing of the package: every layer may use it.
"""
from __future__ import annotations

import html
import re

__all__ = ["md_text"]

# Markdown characters that start inline constructs anywhere (code, emphasis, links, tables, strike, maths);
# '_' is handled apart (see md_text) and '<', '>', '&' are HTML-escaped
_MD_INLINE = re.compile(r"([\\`*\[\]|~$])")
# what makes a block at the start of a line: heading, list item, setext underline, ordered list
_MD_LINE_START = re.compile(r"^(\d*)([-#+=.)])")


def _underscores(m: re.Match) -> str:
    s, (a, b) = m.string, m.span()
    inside = a > 0 and b < len(s) and s[a - 1].isalnum() and s[b].isalnum()
    return m.group(0) if inside else "\\_" * (b - a)


def md_text(value) -> str:
    """A data value as Markdown text that renders as itself: never as HTML, a link, emphasis or a formula.

    The one escape of every reading (module docstring). HTML's special characters become entities
    (``<`` -> ``&lt;``, ``&``, ``>``, quotes), so no element or attribute of the value reaches the rendered
    page; Markdown's inline characters (``\\ ` * [ ] | ~ $``) get a backslash, and so does a ``#``, ``-``,
    ``+``, ``=`` or ``1.`` that opens the value (a block marker when the value starts a line); line breaks
    become spaces, so a value stays inside its bullet. Underscores between two letters or digits
    (``PLANTED_PROGRAM_A``, ``nuclear_density``) are kept as they are: CommonMark never reads those as
    emphasis, and identifiers stay readable in the Markdown source; any other underscore is escaped.

    Parameters
    ----------
    value : any object (formatted with ``str``)

    Returns
    -------
    str, the Markdown source of the value as plain text

    Examples
    --------
    >>> md_text("<img src=x onerror=alert(1)>")
    '&lt;img src=x onerror=alert(1)&gt;'
    >>> md_text("[x](javascript:alert(1))")
    '\\\\[x\\\\](javascript:alert(1))'
    >>> md_text("PLANTED_PROGRAM_A"), md_text("_tail_")
    ('PLANTED_PROGRAM_A', '\\\\_tail\\\\_')
    """
    text = re.sub(r"[\r\n]+", " ", str(value))
    text = _MD_INLINE.sub(r"\\\1", text)
    text = re.sub(r"_+", _underscores, text)
    text = _MD_LINE_START.sub(r"\1\\\2", text)
    return html.escape(text, quote=True)
