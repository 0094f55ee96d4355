"""Reading and writing the compendium's files: atomic writes, tables, GCT and GMT.

Every writer here writes to a temporary name in the destination folder and
renames it into place, so an interrupted run never leaves a half-written file
that a rerun would mistake for finished work.

Formats, as shipped by the GTEx portal and MSigDB (checked on real files):

- expression: GCT v1.2, line 1 ``#1.2``, line 2 ``<rows>\\t<samples>``, line 3
  ``Name\\tDescription\\t<SAMPID...>``; ``Name`` a versioned Ensembl ID,
  ``Description`` a (non-unique) gene symbol; values in TPM.
- gene sets: GMT, one set per line, ``name<TAB>description<TAB>gene...``.

The GTEx folder layout and its annotation tables (sample attributes, subject
phenotypes) are read by :mod:`histo_utils.gtex`, TCGA's by :mod:`histo_utils.tcga`.
"""
from __future__ import annotations

import contextlib
import gzip
import hashlib
import io as io_module
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
from .errors import InputError, InputTypeError, MissingInputError

log = logging.getLogger(__name__)

_UMASK = os.umask(0)
os.umask(_UMASK)

__all__ = [
    "atomic_path",
    "is_temporary",
    "remove_temporary_files",
    "check_gct",
    "GCTError",
    "atomic_open",
    "write_table",
    "read_table",
    "write_json",
    "read_gct",
    "read_gct_samples",
    "write_gct",
    "read_gmt",
    "write_gmt",
    "params_key",
]


# --------------------------------------------------------------------------
# atomic writes
# --------------------------------------------------------------------------
#: the temporary files of :func:`atomic_path`: hidden and ending in ``.tmp`` (never a data suffix)
TEMP_SUFFIX = ".tmp"


def is_temporary(path: str | os.PathLike) -> bool:
    """True for a temporary file of :func:`atomic_path` (``.<name>.<random>.tmp``): never data."""
    name = Path(path).name
    return name.startswith(".") and name.endswith(TEMP_SUFFIX)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it to ``path`` on success.

    The temporary file is hidden and ends in ``.tmp`` (``.<name>.<random>.tmp``),
    so a file left by a hard kill can never be mistaken for data (a slide, a
    table) by a reader that globs by suffix; it is removed if the block raises.
    Writers that choose a format by suffix must be told the format explicitly.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; finished files get the usual permissions
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def remove_temporary_files(root: str | os.PathLike) -> list[Path]:
    """Delete the temporary files of :func:`atomic_path` under ``root`` (left by a killed run).

    Only safe while no other process writes under ``root`` (the runner holds
    its output directory's lock when it calls this). Returns the removed paths.
    """
    removed = []
    for p in Path(root).rglob(f".*{TEMP_SUFFIX}"):
        if p.is_file() and is_temporary(p):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs) -> Iterator[IO]:
    """Open a file for writing under a temporary name; rename it into place on close.

    A path ending in ``.gz`` is gzip-compressed with a zero timestamp and no
    file name in the header, so the same content always gives the same bytes.
    """
    with atomic_path(path) as tmp:
        if not str(path).endswith(".gz"):
            with open(tmp, mode, **kwargs) as fh:
                yield fh
            return
        with open(tmp, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
            if "b" in mode:
                yield gz
            else:
                with io_module.TextIOWrapper(gz, encoding=kwargs.get("encoding", "utf-8"),
                                             newline=kwargs.get("newline")) as text:
                    yield text


def write_table(df: pd.DataFrame, path: str | os.PathLike, *, index: bool = False) -> Path:
    """Write a table atomically; the format follows the suffix.

    ``.parquet`` (compact, typed: tile tables), ``.tsv``/``.txt`` (tab-separated,
    for anything a person may open), ``.csv`` (the numbers behind a figure);
    ``.gz`` may follow ``.tsv``/``.csv``.

    Parameters
    ----------
    df : DataFrame, any shape
    path : destination; its suffix chooses the format
    index : also write the index (parquet keeps it by name)

    Returns
    -------
    Path of the written file
    """
    path = Path(path)
    suffixes = [s for s in path.suffixes if s != ".gz"]
    kind = suffixes[-1] if suffixes else ""
    with atomic_path(path) as tmp:
        if kind == ".parquet":
            df.to_parquet(tmp, index=index)
        elif kind in (".tsv", ".txt", ".csv"):
            # the temporary name ends in .tmp: say the compression (pandas would infer none); repr floats
            # (pandas' default) read back exactly with read_table's round-trip parser
            compression = {"method": "gzip", "mtime": 0} if path.suffix == ".gz" else None
            df.to_csv(tmp, sep="," if kind == ".csv" else "\t", index=index, compression=compression)
        else:
            raise InputError(
                f"Cannot write table '{path}': unknown suffix '{kind}'. "
                "Use .parquet, .tsv, .txt or .csv (optionally + .gz)."
            )
    return path


def read_table(path: str | os.PathLike, **kwargs) -> pd.DataFrame:
    """Read a table written by :func:`write_table`.

    Floats of text tables are parsed with pandas' round-trip parser, so a
    table read back (e.g. by a resumed run) holds the same numbers to the last
    bit as the one written (the default fast parser can be one unit off in the
    17th digit).

    Parameters
    ----------
    path : ``.parquet``, ``.tsv``/``.txt`` or ``.csv`` (optionally ``.gz``)
    **kwargs : passed to pandas' reader

    Returns
    -------
    DataFrame (a parquet file keeps its index; text files get a range index)
    """
    path = Path(path)
    if not path.exists():
        raise MissingInputError(f"Table '{path}' does not exist. Run the notebook that writes it first.")
    suffixes = [s for s in path.suffixes if s != ".gz"]
    kind = suffixes[-1] if suffixes else ""
    if kind == ".parquet":
        return pd.read_parquet(path, **kwargs)
    sep = "," if kind == ".csv" else "\t"
    kwargs.setdefault("float_precision", "round_trip")
    return pd.read_csv(path, sep=sep, **kwargs)


def write_json(obj, path: str | os.PathLike) -> Path:
    """Write ``obj`` as indented, key-sorted JSON, atomically.

    Parameters
    ----------
    obj : JSON-able object (NumPy scalars and arrays are converted)
    path : destination

    Returns
    -------
    Path of the written file
    """
    with atomic_open(path, "w") as fh:
        json.dump(obj, fh, indent=2, sort_keys=True, default=_json_default)
        fh.write("\n")
    return Path(path)


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise InputTypeError(f"Object of type {type(o).__name__} is not JSON serialisable")


# --------------------------------------------------------------------------
# GCT
# --------------------------------------------------------------------------
class GCTError(InputError):
    """An expression file that cannot be read as GCT v1.2; the message names the file and the fix."""


_GZIP_MAGIC = b"\x1f\x8b"


def _open_text(path: Path):
    """Open a GCT file as text, gzip or not by its *content*; a name that disagrees is refused."""
    with open(path, "rb") as raw:
        magic = raw.read(2)
    named_gz = path.suffix == ".gz"
    if named_gz and magic != _GZIP_MAGIC:
        raise GCTError(f"Expression file '{path}' is named .gz but is not gzip-compressed. "
                       f"Rename it to '{path.with_suffix('').name}' (or compress it with gzip).")
    if not named_gz and magic == _GZIP_MAGIC:
        raise GCTError(f"Expression file '{path}' is gzip-compressed but its name does not end in .gz. "
                       f"Rename it to '{path.name}.gz'.")
    return gzip.open(path, "rt", encoding="utf-8") if named_gz else open(path, encoding="utf-8")


@contextlib.contextmanager
def _named_errors(path: Path):
    """Turn decompression and decoding errors into a :class:`GCTError` that names the file."""
    import zlib

    try:
        yield
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise GCTError(f"Expression file '{path}' is a truncated or damaged gzip file ({type(e).__name__}: "
                       f"{e}); an interrupted download? Download it again.") from e
    except UnicodeDecodeError as e:
        raise GCTError(f"Expression file '{path}' is not UTF-8 text ({e}); is it a GCT file?") from e


def _read_header(fh, path: Path) -> tuple[list[str], list[str], bool]:
    """Lines 1-3 of a GCT file: the dimension fields, the sample IDs (duplicates refused) and whether the
    header ends with a tab (an empty last column, as some spreadsheet exports write on every line: the
    column is then ignored, see :func:`check_gct`)."""
    version = fh.readline().strip()
    if version != "#1.2":
        raise GCTError(
            f"Expression file '{path}' is not GCT v1.2: first line is {version[:40]!r}, expected '#1.2'.")
    dims = fh.readline().strip().split("\t")
    header = fh.readline().rstrip("\r\n").split("\t")
    if header[:2] != ["Name", "Description"]:
        raise GCTError(f"Expression file '{path}': third line must start with 'Name\\tDescription', "
                       f"got {header[:2]}.")
    trailing = len(header) > 3 and header[-1] == ""
    samples = header[2:-1] if trailing else header[2:]
    empty = [j for j, s in enumerate(samples) if not s.strip()]
    if empty:
        raise GCTError(f"Expression file '{path}': the header (line 3) has an empty sample ID in column "
                       f"{empty[0] + 3} (after '{samples[empty[0] - 1] if empty[0] else 'Description'}'). Every "
                       "value column needs its sample ID: name it or delete the column.")
    counts = pd.Series(samples).value_counts()
    dup = sorted(counts.index[counts > 1])
    if dup:
        raise GCTError(f"Expression file '{path}' has {len(dup)} sample ID(s) on several columns: {dup[:5]}"
                       f"{' ...' if len(dup) > 5 else ''}. Keep one column per sample.")
    return dims, samples, trailing


def _raise_duplicate_names(path: Path, names: Sequence[str], first_lines: Mapping[str, tuple[int, int]] | None = None
                           ) -> None:
    """Refuse gene ``Name`` values on several rows (a Name indexes the expression table and must be unique)."""
    dup = list(dict.fromkeys(names))
    where = ""
    if first_lines and dup[0] in first_lines:
        a, b = first_lines[dup[0]]
        where = f" ('{dup[0]}' on lines {a} and {b})"
    raise GCTError(f"Expression file '{path}' has {len(dup)} gene Name(s) on several rows: {dup[:5]}"
                   f"{' ...' if len(dup) > 5 else ''}{where}. A GCT Name identifies one gene (GTEx: a versioned "
                   "Ensembl ID; gene symbols belong in Description): keep one row per Name, or merge the "
                   "duplicated rows, and write the file again.")


def _cache_file() -> Path:
    root = os.environ.get("HISTO_UTILS_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) \
        / "histo_utils"
    return Path(root) / "gct_checks.json"


#: what :func:`check_gct` checks, in its cache key: files checked by an earlier version are checked again
_CHECK_VERSION = "v2"  # v2: duplicated gene Names, trailing tabs


def check_gct(path: str | os.PathLike, *, cache: bool = True) -> int:
    """Read a whole GCT file once, streaming: gzip integrity, header and every row's field count.

    A truncated ``.gct.gz`` (an interrupted download) is found here, in the
    notebook that joins the images to the samples, rather than by the first
    notebook that reads the values. The result is cached by path, size and
    modification time (``$HISTO_UTILS_CACHE`` or ``~/.cache/histo_utils``), so
    GTEx's 3 GB table is decompressed once, not on every run.

    Returns
    -------
    int
        The number of gene rows.

    Raises
    ------
    GCTError
        Named file and fix: not gzip as named, truncated or damaged gzip, not
        GCT v1.2, duplicated sample columns, an empty sample ID, a gene
        ``Name`` on several rows (the first duplicated Names and their
        lines), a row with too few or too many fields, or an empty cell
        (with the gene and sample).

    Notes
    -----
    A tab at the end of every line (the header included: an empty last
    column, as some exports write) is read as no column at all; a header
    that ends with a tab while a row does not, or the reverse, is refused
    saying so.
    """
    path = Path(path)
    if not path.exists():
        raise MissingInputError(f"Expression file '{path}' does not exist.")
    st = path.stat()
    key = f"{_CHECK_VERSION}:{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"
    store = _cache_file()
    known: dict = {}
    if cache:
        try:
            known = json.loads(store.read_text())
        except (OSError, ValueError):
            known = {}
        if key in known:
            return int(known[key])
    n = 0
    seen: dict[str, int] = {}
    dup_names: list[str] = []
    dup_lines: dict[str, tuple[int, int]] = {}
    with _named_errors(path), _open_text(path) as fh:
        _, samples, trailing = _read_header(fh, path)
        expected = len(samples) + 2
        for n, line in enumerate(fh, 1):
            line = _row_without_trailing_tab(path, line.rstrip("\r\n"), n, trailing)
            fields = line.count("\t") + 1
            if fields != expected or "\t\t" in line or line.endswith("\t"):
                _raise_bad_row(path, n, line.split("\t"), samples)
            name = line[:line.index("\t")]
            if name in seen:
                dup_names.append(name)
                dup_lines.setdefault(name, (seen[name] + 3, n + 3))
            else:
                seen[name] = n
    if dup_names:
        _raise_duplicate_names(path, dup_names, dup_lines)
    if cache:
        known[key] = n
        with contextlib.suppress(OSError):  # a read-only home only costs the next check
            write_json(known, store)
    return n


def _row_without_trailing_tab(path: Path, line: str, row: int, trailing: bool) -> str:
    """A data line (``row`` 1 = line 4) without the trailing tab of a header that ends with one; a row whose
    end disagrees with the header's is refused (the values would be read one column off)."""
    if trailing:  # the header ends with a tab: every row must too, and that empty column is dropped
        if not line.endswith("\t"):
            gene = line.split("\t", 1)[0]
            raise GCTError(f"Expression file '{path}': the header (line 3) ends with a tab (an empty last column) "
                           f"but the row of gene '{gene}' (line {row + 3}) does not. Remove the trailing tab from "
                           "every line, or from none.")
        return line[:-1]
    return line


def _raise_bad_row(path: Path, row: int, fields: list[str], samples: list[str]):
    gene = fields[0] if fields else "?"
    values = fields[2:]
    if len(values) == len(samples) + 1 and values[-1] == "":
        raise GCTError(f"Expression file '{path}': the row of gene '{gene}' (line {row + 3}) ends with a tab (an "
                       "empty extra column) but the header (line 3) does not. Remove the trailing tabs, or end "
                       "the header with a tab too.")
    if len(values) < len(samples):
        raise GCTError(f"Expression file '{path}': the row of gene '{gene}' (line {row + 3}) has "
                       f"{len(values)} values for {len(samples)} samples (first missing: sample "
                       f"'{samples[len(values)]}'); a short row, the file is damaged.")
    if len(values) > len(samples):
        raise GCTError(f"Expression file '{path}': the row of gene '{gene}' (line {row + 3}) has "
                       f"{len(values)} values for {len(samples)} samples; the file is damaged.")
    j = next(i for i, v in enumerate(values) if v == "")
    raise GCTError(f"Expression file '{path}': empty value for gene '{gene}', sample '{samples[j]}' "
                   f"(line {row + 3}). GCT values must all be numbers; fill or drop that gene or sample.")


def read_gct(path: str | os.PathLike, *, samples: Sequence[str] | None = None,
             dtype: str = "float64") -> pd.DataFrame:
    """Read a GCT v1.2 expression file (GTEx's TPM tables), optionally gzipped.

    Parameters
    ----------
    path
        The ``.gct`` or ``.gct.gz`` file (gzip-compressed exactly when named ``.gz``).
    samples
        Keep only these sample columns, in this order (read the whole file
        otherwise). Only their values are parsed, straight into ``dtype``:
        memory follows the samples read (1,000 of GTEx's 17,382: see
        ``benchmarks/bench_expression_read.py``).
    dtype
        Value type (``"float32"`` halves the memory of a full GTEx table).

    Returns
    -------
    DataFrame, shape (n_genes, n_samples)
        Indexed by ``Name`` (versioned Ensembl ID); the gene symbols are in
        ``df.attrs["description"]`` (a Series aligned with the index).

    Raises
    ------
    GCTError
        Every value must be a number: a missing value (empty cell, ``NA``, a
        short row) or a non-numeric one is refused with the file, gene and
        sample named, never passed on as NaN. Also: duplicated sample columns,
        a gene ``Name`` on several rows, ``samples`` repeated or not in the
        file, gzip named otherwise, truncated gzip.

    Notes
    -----
    Real subsets of GTEx files keep the original dimension line, so a count
    mismatch is logged as a warning rather than raised. A tab at the end of
    every line (an empty last header column) is ignored.
    """
    path = Path(path)
    if not path.exists():
        raise MissingInputError(f"Expression file '{path}' does not exist.")
    with _named_errors(path), _open_text(path) as fh:
        dims, columns, trailing = _read_header(fh, path)
        first = fh.readline().rstrip("\r\n")  # a row ending otherwise than the header would shift the values
    if first:
        fields = _row_without_trailing_tab(path, first, 1, trailing).split("\t")
        if len(fields) == len(columns) + 3 and fields[-1] == "":
            _raise_bad_row(path, 1, fields, columns)
    usecols = ["Name", "Description", *columns] if trailing else None  # the empty last column left out
    if samples is not None:
        samples = list(samples)
        rep = sorted({s for s in samples if samples.count(s) > 1})
        if rep:
            raise InputError(f"read_gct('{path}'): samples lists {rep[:5]} more than once.")
        absent = [s for s in samples if s not in set(columns)]
        if absent:
            raise GCTError(f"Expression file '{path}' has no column for {len(absent)} requested samples: "
                           f"{absent[:5]}{' ...' if len(absent) > 5 else ''}.")
        usecols = ["Name", "Description", *samples]
    wanted = columns if samples is None else samples
    read = dict(sep="\t", skiprows=2, usecols=usecols, index_col=0, engine="c",
                compression="gzip" if path.suffix == ".gz" else None)
    with _named_errors(path):
        try:
            # values parsed straight into ``dtype`` (no float64 copy of the table); only the columns
            # of ``samples`` are kept by the parser, so memory follows the samples read, not the file
            df = pd.read_csv(path, dtype={"Name": str, "Description": str, **dict.fromkeys(wanted, dtype)},
                             **read)
        except ValueError as e:
            if isinstance(e, pd.errors.ParserError) and "could not convert" not in str(e).lower():
                raise GCTError(f"Expression file '{path}' cannot be parsed as GCT: {e}") from e
            # a non-numeric value: read as text to name the gene and sample (rare, bad input only)
            try:
                df = pd.read_csv(path, dtype=str, **read)
            except pd.errors.ParserError as e2:
                raise GCTError(f"Expression file '{path}' cannot be parsed as GCT: {e2}") from e2
            desc = df.pop("Description")
            _check_values(df, path)
            raise GCTError(f"Expression file '{path}' cannot be parsed as GCT: {e}") from e
    desc = df.pop("Description")
    if df.index.has_duplicates:
        _raise_duplicate_names(path, df.index[df.index.duplicated()])
    _check_values(df, path)
    if (df.dtypes != np.dtype(dtype)).any():
        df = df.astype(dtype)
    if samples is not None and list(df.columns) != samples:
        df = df[samples]  # the parser keeps the file's order; return the requested one
    try:
        n_rows, n_cols = int(dims[0]), int(dims[1])
        if samples is None and (n_rows, n_cols) != df.shape:
            log.warning(
                "Expression file '%s' declares %d x %d but holds %d x %d (a subset of a GTEx file?)",
                path, n_rows, n_cols, *df.shape,
            )
    except (ValueError, IndexError):
        log.warning("Expression file '%s': unreadable dimension line %r", path, dims)
    df.index.name = "Name"
    df.attrs["description"] = desc
    return df


def _check_values(df: pd.DataFrame, path: Path) -> None:
    """Refuse missing and non-numeric values, naming file, gene and sample."""
    for col in df.columns[df.dtypes == object]:
        as_num = pd.to_numeric(df[col], errors="coerce")
        bad = as_num.isna() & df[col].notna()
        if bad.any():
            gene = bad.index[bad.to_numpy()][0]
            raise GCTError(f"Expression file '{path}': value {df.at[gene, col]!r} of gene '{gene}', sample "
                           f"'{col}' is not a number ({int(bad.sum())} such value(s) in that sample).")
    holed = [c for c in df.columns if df[c].hasnans]  # column by column: no genes x samples mask in memory
    if holed:
        col = df[holed[0]]
        gene = col.index[col.isna().to_numpy()][0]
        raise GCTError(f"Expression file '{path}': missing values (empty cell, NA or a short row) in "
                       f"{len(holed)} sample(s), e.g. gene '{gene}', sample '{holed[0]}'. GCT values must all "
                       "be numbers; fill or drop those genes or samples.")


def read_gct_samples(path: str | os.PathLike, *, check: bool = True) -> list[str]:
    """The sample IDs of a GCT file (its header), after checking the whole file with :func:`check_gct`.

    ``check=False`` reads the header only. The check streams the file once
    (cached by size and modification time), so a truncated download is found
    by the notebook that joins images to samples.
    """
    path = Path(path)
    if not path.exists():
        raise MissingInputError(f"Expression file '{path}' does not exist.")
    if check:
        check_gct(path)
    with _named_errors(path), _open_text(path) as fh:
        _, samples, _ = _read_header(fh, path)
    return samples


def write_gct(df: pd.DataFrame, path: str | os.PathLike, *, description: pd.Series | None = None,
              float_format: str = "%.4g") -> Path:
    """Write genes x samples as GCT v1.2 (gzip if ``path`` ends in ``.gz``), atomically."""
    if description is None:
        description = df.attrs.get("description", pd.Series(df.index, index=df.index))
    out = df.copy()
    out.insert(0, "Description", description.reindex(df.index).values)
    out.index.name = "Name"
    with atomic_open(path, "w") as fh:
        fh.write("#1.2\n")
        fh.write(f"{df.shape[0]}\t{df.shape[1]}\n")
        out.to_csv(fh, sep="\t", float_format=float_format)
    return Path(path)


# --------------------------------------------------------------------------
# GTEx annotation tables
# --------------------------------------------------------------------------
# --------------------------------------------------------------------------
# GMT
# --------------------------------------------------------------------------
def read_gmt(path: str | os.PathLike) -> dict[str, list[str]]:
    """Read a GMT file into ``{set name: [genes]}`` (descriptions dropped)."""
    sets: dict[str, list[str]] = {}
    with open(path) as fh:
        for n, line in enumerate(fh, 1):
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 3:
                if line.strip():
                    raise InputError(f"GMT '{path}' line {n}: expected name, description and genes.")
                continue
            sets[parts[0]] = [g for g in parts[2:] if g]
    return sets


def write_gmt(sets: Mapping[str, Sequence[str]], path: str | os.PathLike, *,
              descriptions: Mapping[str, str] | None = None) -> Path:
    """Write ``{name: genes}`` as GMT, atomically."""
    descriptions = descriptions or {}
    with atomic_open(path, "w") as fh:
        for name, genes in sets.items():
            fh.write("\t".join([name, descriptions.get(name, "na"), *genes]) + "\n")
    return Path(path)


def params_key(params) -> str:
    """A short, stable hash of a parameters dataclass (results made with it are filed under it)."""
    from dataclasses import asdict

    return hashlib.sha256(json.dumps(asdict(params), sort_keys=True, default=str).encode()).hexdigest()[:12]
