"""Run the compendium's numbered notebooks with papermill, from a parameter profile.

Usage::

    python -m histo_utils.run --profile default                 # every notebook, runs/default/
    python -m histo_utils.run --profile tiny --only 00 01 --out /tmp/t
    python -m histo_utils.run --params my_gtex.yaml
    python -m histo_utils.run --profile default --publish figures   # also copy the figures

A profile (``params/<name>.yaml``) has two sections::

    common:          # given to every notebook that declares the key
      seed: 0
      data_dir: "{out}/data"       # {out} is the run's output directory
    notebooks:       # the notebooks to run, in order, each with its parameters
      00_synthetic_cohort: {samples_per_tissue: 3}
      01_tiling: {tile_sizes_px: [256]}

Every key is checked against the ``parameters`` cell of its notebook before
anything runs; a key no notebook declares stops the run (papermill itself
would only warn). Each notebook gets ``out_dir``, the run's output directory;
it writes under ``<out>/<notebook>/`` and its figures under
``<out>/figures/<notebook>/``. The executed copies go to ``<out>/notebooks/``
(kept when a notebook fails, for reading).

A notebook is skipped when its fingerprint matches the last successful run:
the notebook file, its parameters, the ``histo_utils`` sources, the
fingerprints of the notebooks before it, and (for a data directory outside
the output directory) the names, sizes and times of the files in it.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import yaml

from .progress import KERNEL_ARGUMENTS, NotebookProgress, QuietPapermill
from .report import write_report

log = logging.getLogger("histo_utils.run")

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS_DIR = ROOT / "notebooks"
PARAMS_DIR = ROOT / "params"
PACKAGE_DIR = Path(__file__).resolve().parent


class ProfileError(ValueError):
    """A parameter profile that cannot be run as written."""


class NotebookFailed(RuntimeError):
    """A notebook raised; the message names it and the failing cell."""


@dataclass
class Profile:
    """A parsed, validated parameter profile."""

    name: str
    path: Path
    common: dict[str, Any]
    notebooks: dict[str, dict[str, Any]]
    notebook_paths: dict[str, Path] = field(default_factory=dict)
    declared: dict[str, dict[str, Any]] = field(default_factory=dict)


# --------------------------------------------------------------------------
# profiles
# --------------------------------------------------------------------------
def available_notebooks(notebooks_dir: Path | None = None) -> dict[str, Path]:
    """Numbered notebooks (``NN_name.ipynb``) by stem, in order."""
    notebooks_dir = notebooks_dir or NOTEBOOKS_DIR
    found = sorted(p for p in notebooks_dir.glob("[0-9][0-9]_*.ipynb"))
    return {p.stem: p for p in found}


def declared_parameters(notebook: Path) -> dict[str, Any]:
    """Names and default values of a notebook's ``parameters`` cell."""
    import papermill

    params = papermill.inspect_notebook(str(notebook))
    if not params:
        raise ProfileError(f"Notebook '{notebook.name}' has no cell tagged 'parameters'.")
    return {name: p.get("default") for name, p in params.items()}


def notebook_needs(notebook: Path) -> list[str] | None:
    """The notebooks whose results a notebook reads, from its metadata ``histo_utils.needs``.

    A list of notebook numbers or names (``[]``: self-contained); None when absent: every earlier notebook.
    """
    import nbformat

    meta = nbformat.read(str(notebook), as_version=4).metadata.get("histo_utils", {})
    needs = meta.get("needs")
    return None if needs is None else [str(n) for n in needs]


def _upstream(needs: list[str] | None, earlier: Sequence[str]) -> list[str]:
    if needs is None:
        return list(earlier)
    return [s for s in earlier if s in needs or s.split("_")[0] in needs]


def load_profile(path: Path, *, notebooks_dir: Path | None = None) -> Profile:
    """Read and validate a profile: known notebooks, declared keys only."""
    if not path.exists():
        names = sorted(p.stem for p in PARAMS_DIR.glob("*.yaml"))
        raise ProfileError(f"Profile '{path}' does not exist. Available profiles: {names}")
    raw = yaml.safe_load(path.read_text()) or {}
    unknown_sections = set(raw) - {"common", "notebooks", "description"}
    if unknown_sections:
        raise ProfileError(f"Profile '{path.name}': unknown section(s) {sorted(unknown_sections)}; "
                           "use 'common', 'notebooks' and 'description'.")
    common = raw.get("common") or {}
    nbs = raw.get("notebooks") or {}
    if not nbs:
        raise ProfileError(f"Profile '{path.name}' lists no notebooks under 'notebooks:'.")
    available = available_notebooks(notebooks_dir)
    prof = Profile(name=path.stem, path=path, common=common, notebooks={})
    for key, params in nbs.items():
        stem = _match_notebook(str(key), available, path)
        if params is None:
            params = {}
        if not isinstance(params, dict):
            raise ProfileError(f"Profile '{path.name}': parameters of '{stem}' must be a mapping, got {params!r}.")
        prof.notebooks[stem] = params
        prof.notebook_paths[stem] = available[stem]
        prof.declared[stem] = declared_parameters(available[stem])
    prof.notebooks = dict(sorted(prof.notebooks.items()))
    for stem, params in prof.notebooks.items():
        declared = prof.declared[stem]
        if "out_dir" not in declared:
            raise ProfileError(f"Notebook '{stem}' does not declare 'out_dir' in its parameters cell; "
                               "every notebook must, the runner sets it.")
        for k in params:
            if k == "out_dir":
                raise ProfileError(f"Profile '{path.name}': '{stem}.out_dir' is set by the runner (--out).")
            if k not in declared:
                raise ProfileError(
                    f"Profile '{path.name}': parameter '{k}' is not declared by notebook '{stem}' "
                    f"(typo?). Its parameters are: {sorted(declared)}")
    for k in common:
        if not any(k in d for d in prof.declared.values()):
            raise ProfileError(f"Profile '{path.name}': common parameter '{k}' is declared by none of the "
                               f"notebooks {list(prof.notebooks)} (typo?).")
    return prof


def _match_notebook(key: str, available: dict[str, Path], path: Path) -> str:
    if key in available:
        return key
    hits = [s for s in available if s.split("_")[0] == key]
    if len(hits) == 1:
        return hits[0]
    raise ProfileError(f"Profile '{path.name}' names notebook '{key}', which is not in notebooks/. "
                       f"Available: {list(available)}")


def resolve_parameters(prof: Profile, stem: str, out: Path) -> dict[str, Any]:
    """The parameters papermill passes to one notebook (common + own + out_dir, ``{out}`` expanded)."""
    declared = prof.declared[stem]
    params = {k: v for k, v in prof.common.items() if k in declared}
    params.update(prof.notebooks[stem])
    params["out_dir"] = str(out)
    return {k: _expand(v, out) for k, v in params.items()}


def _expand(value, out: Path):
    if isinstance(value, str):
        return value.replace("{out}", str(out))
    if isinstance(value, list):
        return [_expand(v, out) for v in value]
    if isinstance(value, dict):
        return {k: _expand(v, out) for k, v in value.items()}
    return value


# --------------------------------------------------------------------------
# fingerprints
# --------------------------------------------------------------------------
def _package_hash() -> str:
    h = hashlib.sha256()
    for p in sorted(PACKAGE_DIR.rglob("*.py")):
        h.update(p.relative_to(PACKAGE_DIR).as_posix().encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def _external_inputs(params: dict[str, Any], out: Path) -> str:
    """Fingerprint of directories/files named by parameters that lie outside the output directory."""
    h = hashlib.sha256()
    for k, v in sorted(params.items()):
        if not isinstance(v, str) or k == "out_dir" or not v or "\n" in v:
            continue
        p = Path(v)
        if not p.is_absolute() or not p.exists():
            continue
        try:
            p.resolve().relative_to(out.resolve())
            continue  # made by an earlier notebook: covered by its fingerprint
        except ValueError:
            pass
        files = [p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file())
        for q in files:
            st = q.stat()
            h.update(f"{q}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()


def fingerprint(notebook: Path, params: dict[str, Any], upstream: Sequence[str], out: Path) -> str:
    """Hash of everything a notebook's results depend on."""
    h = hashlib.sha256()
    h.update(notebook.read_bytes())
    h.update(json.dumps(params, sort_keys=True, default=str).encode())
    h.update(_package_hash().encode())
    h.update(_external_inputs(params, out).encode())
    for u in upstream:
        h.update(u.encode())
    return h.hexdigest()


# --------------------------------------------------------------------------
# running
# --------------------------------------------------------------------------
def _stamp_path(out: Path, stem: str) -> Path:
    return out / ".runner" / f"{stem}.json"


def _read_stamp(out: Path, stem: str) -> dict | None:
    p = _stamp_path(out, stem)
    return json.loads(p.read_text()) if p.exists() else None


def run_profile(prof: Profile, out: Path, *, only: Sequence[str] | None = None, force: bool = False,
                kernel: str | None = None) -> list[dict]:
    """Run a profile's notebooks in order; returns one record per notebook (ran / skipped, seconds)."""
    from papermill.exceptions import PapermillExecutionError

    from .io import write_json

    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    selected = list(prof.notebooks)
    if only:
        wanted = [_match_notebook(o, {s: prof.notebook_paths[s] for s in prof.notebooks}, prof.path)
                  for o in only]
        selected = [s for s in selected if s in wanted]
    records = []
    prints: dict[str, str] = {}
    upstream_of = {stem: _upstream(notebook_needs(prof.notebook_paths[stem]),
                                   [s for s in prof.notebooks if s < stem]) for stem in prof.notebooks}
    needed: set[str] = set()
    for stem in reversed(list(prof.notebooks)):  # what the selected notebooks need, transitively
        if stem in selected or stem in needed:
            needed.update(upstream_of[stem])
    for stem in prof.notebooks:
        params = resolve_parameters(prof, stem, out)
        upstream = [prints[s] for s in upstream_of[stem] if s in prints]
        fp = fingerprint(prof.notebook_paths[stem], params, upstream, out)
        if stem not in selected:
            stamp = _read_stamp(out, stem)
            if stamp is None:
                if stem in needed:
                    raise ProfileError(
                        f"Notebook '{stem}' has not run in '{out}', and the notebooks selected with --only "
                        f"need its results. Run it first (--only {stem.split('_')[0]}) or drop --only.")
                continue
            prints[stem] = stamp["fingerprint"]
            continue
        prints[stem] = fp
        stamp = _read_stamp(out, stem)
        executed = out / "notebooks" / f"{stem}.ipynb"
        if not force and stamp and stamp.get("fingerprint") == fp and executed.exists() \
                and (out / stem).exists():
            log.info("%s: unchanged since %s, skipped", stem, stamp.get("finished"))
            records.append({"notebook": stem, "status": "skipped", "seconds": 0.0})
            continue
        executed.parent.mkdir(parents=True, exist_ok=True)
        _stamp_path(out, stem).unlink(missing_ok=True)
        log.info("%s: running with %s", stem, json.dumps(params, default=str))
        t0 = time.perf_counter()
        progress = _progress_of(stem, prof.notebook_paths[stem], stamp)
        try:
            _execute(prof.notebook_paths[stem], executed, params, kernel=kernel, progress=progress)
        except PapermillExecutionError as e:
            src = _cell_source(executed, e.exec_count)
            raise NotebookFailed(
                f"Notebook '{stem}' failed in cell {e.exec_count} ({e.ename}: {e.evalue}).\n"
                f"Cell source begins:\n{src}\nThe executed notebook is kept for reading: {executed}"
            ) from None
        secs = time.perf_counter() - t0
        write_json({"fingerprint": fp, "parameters": params, "seconds": secs, "cell_seconds": progress.cell_seconds,
                    "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}, _stamp_path(out, stem))
        log.info("%s: done in %.1f s", stem, secs)
        records.append({"notebook": stem, "status": "ran", "seconds": secs})
    return records


def _progress_of(stem: str, notebook: Path, stamp: dict | None) -> NotebookProgress:
    """The live display of one notebook, its estimate from the previous run's stamp."""
    import nbformat

    n_cells = len(nbformat.read(str(notebook), as_version=4).cells) + 1  # + papermill's injected cell
    stamp = stamp or {}
    return NotebookProgress(stem, n_cells, previous_seconds=stamp.get("seconds"),
                            previous_cells=stamp.get("cell_seconds"))


def _execute(notebook: Path, executed: Path, params: dict[str, Any], *, kernel: str | None,
             progress: NotebookProgress) -> None:
    """Run one notebook with papermill, its cells and inner tqdm bars shown by ``progress``."""
    import papermill

    try:
        papermill.execute_notebook(
            str(notebook), str(executed), parameters=params, kernel_name=kernel,
            progress_bar=False, log_output=False, cwd=str(notebook.parent),
            stderr_file=progress, on_cell_start=progress.on_cell_start,
            on_cell_executed=progress.on_cell_executed, extra_arguments=KERNEL_ARGUMENTS,
        )
    finally:
        progress.close()


def _cell_source(executed: Path, exec_count) -> str:
    try:
        import nbformat

        nb = nbformat.read(str(executed), as_version=4)
        for c in nb.cells:
            if c.cell_type == "code" and c.get("execution_count") == exec_count:
                return "\n".join("    " + line for line in c.source.splitlines()[:6])
    except Exception:  # reading the copy is only for the message
        pass
    return "    (source unavailable)"


def publish_figures(out: Path, dest: Path, notebooks: Sequence[str]) -> int:
    """Copy ``<out>/figures/<notebook>/`` to ``dest/<notebook>/`` (replacing it); returns files copied."""
    n = 0
    for stem in notebooks:
        src = out / "figures" / stem
        if not src.is_dir():
            continue
        target = dest / stem
        tmp = dest / f".{stem}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(src, tmp)
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
        n += sum(1 for _ in target.rglob("*") if _.is_file())
    return n


def _quiet_papermill() -> None:
    """Drop papermill's per-notebook INFO lines from the console (kept with --verbose)."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, QuietPapermill) for f in handler.filters):
            handler.addFilter(QuietPapermill())


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m histo_utils.run", description=__doc__.split("\n\n")[0])
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--profile", default=None, help="profile name in params/ (tiny, default, ...)")
    src.add_argument("--params", type=Path, default=None, help="a profile file anywhere")
    ap.add_argument("--only", nargs="+", metavar="NN", help="run only these notebooks (numbers or names)")
    ap.add_argument("--out", type=Path, default=None, help="output directory (default runs/<profile>)")
    ap.add_argument("--force", action="store_true", help="rerun even if nothing changed")
    ap.add_argument("--publish", type=Path, default=None, help="copy the run's figures into this folder")
    ap.add_argument("--kernel", default=None, help="Jupyter kernel name (default: the notebook's)")
    ap.add_argument("--list", action="store_true", help="list the notebooks and their parameters, then stop")
    ap.add_argument("--no-report", action="store_true",
                    help="do not write the HTML report (<out>/report/index.html) after the run")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s", datefmt="%H:%M:%S")
    if not args.verbose:
        _quiet_papermill()
    path = args.params or PARAMS_DIR / f"{args.profile or 'default'}.yaml"
    try:
        prof = load_profile(path)
        if args.list:
            for stem, declared in prof.declared.items():
                print(stem)
                for k, v in declared.items():
                    print(f"    {k} = {v}")
            return 0
        out = args.out or ROOT / "runs" / prof.name
        records = run_profile(prof, out, only=args.only, force=args.force, kernel=args.kernel)
    except (ProfileError, NotebookFailed) as e:
        log.error("%s", e)
        return 2
    for r in records:
        log.info("%-28s %-8s %7.1f s", r["notebook"], r["status"], r["seconds"])
    if args.publish:
        n = publish_figures(out.resolve(), args.publish.resolve(), [r["notebook"] for r in records])
        log.info("published %d figure files to %s", n, args.publish)
    if not args.no_report:
        try:
            write_report(out)
        except Exception:  # the notebooks' results stand; say why the report is missing
            log.exception("writing the report of %s failed", out)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
