"""Run the compendium's numbered notebooks with papermill, from a parameter profile.

Usage::

    python -m histo_utils.run --profile default                 # every notebook, runs/default/
    python -m histo_utils.run --profile tiny --only 00 01 --out /tmp/t
    python -m histo_utils.run --params my_gtex.yaml
    python -m histo_utils.run --profile default --publish figures   # also copy the figures
    python -m histo_utils.run --profile gtex --smoke --out /tmp/g    # the profile as it is, sizes scaled down

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
import ast
import contextlib
import difflib
import hashlib
import json
import logging
import os
import shutil
import signal
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

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


class OutputLocked(RuntimeError):
    """Another runner is writing to the same output directory."""


class RunInterrupted(BaseException):
    """The runner received SIGTERM or SIGINT; its notebook's kernel and workers were stopped."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


# the executed notebook is written under a temporary name (see _running_copy) that papermill warns about
warnings.filterwarnings("ignore", message=r"The specified file .* does not end in one of", module="papermill")


@dataclass
class Profile:
    """A parsed, validated parameter profile."""

    name: str
    path: Path
    common: dict[str, Any]
    notebooks: dict[str, dict[str, Any]]
    notebook_paths: dict[str, Path] = field(default_factory=dict)
    declared: dict[str, dict[str, Any]] = field(default_factory=dict)
    types: dict[str, dict[str, str]] = field(default_factory=dict)


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


def declared_types(notebook: Path) -> dict[str, str]:
    """Type of each parameter of a notebook's ``parameters`` cell as papermill infers it.

    The annotation (``epochs: int = 90`` gives ``"int"``), or ``"None"`` for a
    parameter without one (then any value is accepted).
    """
    import papermill

    return {name: str(p.get("inferred_type_name") or "None")
            for name, p in papermill.inspect_notebook(str(notebook)).items()}


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


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML safe loader that refuses a key given twice in one mapping (YAML itself keeps the last)."""


def _construct_unique_mapping(loader, node, deep=False):
    seen: dict = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                "while reading a mapping", node.start_mark,
                f"found the key {key!r} twice (first on line {seen[key] + 1}); a later value would silently "
                "replace the earlier one", key_node.start_mark)
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


def read_profile_yaml(path: Path) -> dict:
    """Parse a profile file: YAML errors name the file and line, duplicated keys are refused.

    Returns the top-level mapping (empty for an empty file).
    """
    try:
        raw = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "an unknown line"
        what = str(e.problem or e.context)
        if e.context and e.problem and e.context_mark is not None:
            what += f" ({e.context} that starts on line {e.context_mark.line + 1})"
        if isinstance(e, yaml.constructor.ConstructorError) and "twice" in str(e.problem):
            raise ProfileError(f"Profile '{path}' at {where}: {what}.") from None
        raise ProfileError(f"Profile '{path}' is not valid YAML at {where}: {what}.") from None
    except yaml.YAMLError as e:
        raise ProfileError(f"Profile '{path}' is not valid YAML: {e}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ProfileError(f"Profile '{path}' must be a mapping with the sections 'common' and 'notebooks' "
                           f"(see params/tiny.yaml), but it holds a {type(raw).__name__}: {str(raw)[:60]!r}.")
    return raw


def _closest(name: str, choices) -> str:
    """``" Did you mean 'x'?"`` for the closest of ``choices`` (difflib), or ``""``."""
    hit = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" Did you mean '{hit[0]}'?" if hit else ""


_TYPES = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,), "list": (list, tuple),
          "tuple": (list, tuple), "dict": (dict,), "None": (type(None),)}


def type_matches(value: Any, type_name: str) -> bool:
    """Whether a profile value fits a parameter's declared type (``int``, ``float | None``, ``Optional[str]``...).

    ``bool`` is not an ``int`` here, an ``int`` is a ``float``; an unknown type
    name (a class papermill cannot check) accepts anything.
    """
    t = type_name.replace(" ", "")
    if t.startswith("Optional[") and t.endswith("]"):
        t = t[len("Optional["):-1] + "|None"
    for alt in t.split("|"):
        base = alt.split("[")[0]
        base = {"none": "None", "nonetype": "None", "List": "list", "Dict": "dict", "Tuple": "tuple"}.get(
            base.lower() if base.lower() in ("none", "nonetype") else base, base)
        if base not in _TYPES:  # Any, a class: not checkable here
            return True
        kinds = _TYPES[base]
        if isinstance(value, bool) and base != "bool":
            continue
        if isinstance(value, kinds):
            return True
    return False


def _check_types(path: Path, where: str, params: dict[str, Any], types: dict[str, str]) -> None:
    for k, v in params.items():
        t = types.get(k, "None")
        if t == "None":  # no annotation in the parameters cell: papermill cannot say, neither can we
            continue
        if not type_matches(v, t):
            hint = ""
            if isinstance(v, str) and t.split("|")[0].strip() in ("int", "float", "list"):
                hint = " Write it without quotes" + (" as a YAML list, e.g. [256]" if "list" in t else "") + "."
            raise ProfileError(f"Profile '{path.name}': parameter '{k}' of {where} must be {t} (as declared in "
                               f"its parameters cell), got {type(v).__name__} {v!r}.{hint}")


def load_profile(path: Path, *, notebooks_dir: Path | None = None) -> Profile:
    """Read and validate a profile: YAML, known sections and notebooks, declared keys, declared types."""
    if not path.exists():
        names = sorted(p.stem for p in PARAMS_DIR.glob("*.yaml"))
        raise ProfileError(f"Profile '{path}' does not exist. Available profiles: {names}"
                           + _closest(path.stem, names))
    raw = read_profile_yaml(path)
    sections = ("common", "notebooks", "description")
    unknown_sections = [str(k) for k in raw if k not in sections]
    if unknown_sections:
        raise ProfileError(f"Profile '{path.name}': unknown section(s) {sorted(unknown_sections)}; "
                           "use 'common', 'notebooks' and 'description'." + _closest(unknown_sections[0], sections))
    common = raw.get("common") or {}
    nbs = raw.get("notebooks") or {}
    for name, sec in (("common", common), ("notebooks", nbs)):
        if not isinstance(sec, dict):
            raise ProfileError(f"Profile '{path.name}': section '{name}' must be a mapping of names to values, "
                               f"got {type(sec).__name__} {sec!r}.")
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
        prof.types[stem] = declared_types(available[stem])
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
                    f"(typo?).{_closest(k, declared)} Its parameters are: {sorted(declared)}")
        _check_types(path, f"notebook '{stem}'", params, prof.types[stem])
    for k in common:
        users = [s for s, d in prof.declared.items() if k in d]
        if not users:
            every = {n for d in prof.declared.values() for n in d}
            raise ProfileError(f"Profile '{path.name}': common parameter '{k}' is declared by none of the "
                               f"notebooks {list(prof.notebooks)} (typo?).{_closest(k, every)}")
        for stem in users:
            _check_types(path, f"notebook '{stem}' (from 'common')", {k: common[k]}, prof.types[stem])
    return prof


def _match_notebook(key: str, available: dict[str, Path], path: Path, *, named_by: str | None = None) -> str:
    """The notebook stem that ``key`` (a stem or its number, ``"03"``) names; ``named_by`` says who named it."""
    if key in available:
        return key
    hits = [s for s in available if s.split("_")[0] == key]
    if len(hits) == 1:
        return hits[0]
    who = named_by or f"Profile '{path.name}'"
    raise ProfileError(f"{who} names notebook '{key}', which is not in notebooks/."
                       f"{_closest(key, available)} Available: {list(available)}")


def split_only(only: Sequence[str] | None) -> list[str] | None:
    """``--only`` values as notebook keys: ``["03,04", "05"]`` -> ``["03", "04", "05"]`` (commas or spaces)."""
    if not only:
        return None
    return [k.strip() for o in only for k in str(o).split(",") if k.strip()]


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
# smoke scale: a profile as it is, its sizes scaled down
# --------------------------------------------------------------------------
#: The size keys that ``--smoke`` scales down, per notebook: ``key -> (cap, zero_means_all)``. A key's value
#: becomes ``min(value, cap)``; when ``zero_means_all`` a value of 0 ("every tile", "every slide") becomes the
#: cap too, otherwise 0 ("none") stays 0. Only sizes are listed: how many epochs, tiles, slides shown,
#: permutations, shuffles, folds, bootstrap draws, steps. Never a method key (architectures, input and tile
#: sizes, thresholds, confounders, fills, splits, ensemble size): the smoke run exercises the profile's method
#: at the profile's settings, on less data and fewer repetitions.
SMOKE_SCALE: dict[str, dict[str, tuple[int, bool]]] = {
    "01_tiling": {"n_example_slides": (2, False), "check_reads": (1, False)},
    "02_training": {"epochs": (1, False), "max_train_tiles_per_slide": (1, True), "max_train_slides_per_class": (2, True),
                    "max_val_tiles_per_slide": (1, True), "max_eval_tiles_per_slide": (1, True),
                    "max_feature_tiles_per_slide": (1, True)},
    "03_feature_correlation": {"n_permutations": (50, False)},
    "04_pca_cross_variance": {"n_shuffles": (5, False)},
    "05_confounder_regression": {"n_shuffles": (5, False)},
    "06_gsea": {"permutations": (50, False)},
    "07_visualization": {"n_features": (1, False), "tiles_per_feature": (1, False), "am_steps": (3, False),
                         "auroc_tiles": (2, False), "n_random_features": (2, False)},
    "08_hti_survival": {"n_patients": (40, False), "epochs": (1, False), "tiles_per_slide": (1, True),
                        "val_tiles_per_slide": (1, True), "restarts": (0, False), "n_boot": (10, False),
                        "n_example_slides": (2, False), "max_tiles_per_slide": (2, True)},
    "09_radiogenomic_network": {"n_pretrain": (40, False), "epochs": (3, False), "ae_epochs": (2, False),
                                "n_folds": (3, False), "n_boot": (10, False), "saliency_permutations": (20, False)},
}


def smoke_scale(prof: Profile) -> list[dict[str, Any]]:
    """Scale a profile's size keys down in place (:data:`SMOKE_SCALE`); returns what changed.

    Every notebook of the profile gets each of its size keys at the smoke value, whether the profile sets the
    key or the notebook's parameters cell gives its default. Method keys are left as the profile has them.

    Returns
    -------
    list of dict, one per changed key: ``notebook, key, profile`` (the value it would have run with),
    ``smoke`` (the value it runs with).
    """
    changes = []
    for stem, params in prof.notebooks.items():
        declared = prof.declared.get(stem, {})
        for key, (cap, zero_all) in SMOKE_SCALE.get(stem, {}).items():
            if key not in declared:
                continue
            value = None
            if key in params or key in prof.common:
                value = params.get(key, prof.common.get(key))
            else:  # the notebook's default, as papermill reads it: the source text of the value
                with contextlib.suppress(ValueError, SyntaxError):
                    value = ast.literal_eval(str(declared[key]))
            if not isinstance(value, int) or isinstance(value, bool):
                continue
            new = cap if (value == 0 and zero_all) else min(value, cap)
            if new != value:
                params[key] = new
                changes.append({"notebook": stem, "key": key, "profile": value, "smoke": new})
    return changes


def describe_smoke(changes: Sequence[dict[str, Any]]) -> str:
    """The smoke scale as lines for the console: ``notebook: key profile -> smoke, ...``."""
    by_nb: dict[str, list[str]] = {}
    for c in changes:
        by_nb.setdefault(c["notebook"], []).append(f"{c['key']} {c['profile']} -> {c['smoke']}")
    return "\n".join(f"  {nb}: {', '.join(items)}" for nb, items in by_nb.items()) or "  (nothing to scale)"


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


# --------------------------------------------------------------------------
# one runner per output directory; a clean stop on SIGTERM / SIGINT
# --------------------------------------------------------------------------
def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


@contextlib.contextmanager
def output_lock(out: Path):
    """Hold ``<out>/.runner/lock`` for the run: a second runner on the same output directory stops.

    The lock is an ``flock`` on the file (released by the system when its
    holder dies, however it dies), and the file names the holder's PID. A lock
    file left by a dead runner is taken over with a message.

    Raises
    ------
    OutputLocked
        Another live runner holds the directory; the message names its PID.
    """
    import fcntl

    lock = out / ".runner" / "lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _lock_holder(lock)
            raise OutputLocked(
                f"Output directory '{out}' is in use by another runner (PID {holder.get('pid', '?')}, started "
                f"{holder.get('started', '?')}: {holder.get('command', '?')}). Wait for it to finish, stop it "
                f"(kill {holder.get('pid', '<pid>')}), or choose another --out.") from None
        prev = _lock_holder(lock)
        if prev.get("pid") and prev["pid"] != os.getpid():
            state = "no longer running" if not _pid_alive(int(prev["pid"])) else "not holding the lock"
            log.warning("Taking over the lock of '%s' from runner PID %s (%s; it was stopped without cleaning up)",
                        out, prev["pid"], state)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                  "command": " ".join(sys.argv)[:200]}).encode(), 0)
        try:
            yield lock
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _lock_holder(lock: Path) -> dict:
    try:
        return json.loads(lock.read_text() or "{}")
    except (OSError, ValueError):
        return {}


def _descendants(pid: int) -> list:
    """Every process started by ``pid``, directly or not (kernels, pool workers, Dask nannies and workers)."""
    import psutil

    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def stop_descendants(*, grace: float = 5.0) -> int:
    """SIGTERM every process this one started (its kernels and their workers), SIGKILL those left after ``grace``.

    Returns the number of processes that were running.
    """
    import psutil

    procs = _descendants(os.getpid())  # listed before any dies: orphans could no longer be found
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.terminate()
    _, alive = psutil.wait_procs(procs, timeout=grace)
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(alive, timeout=grace)
    return len(procs)


@contextlib.contextmanager
def stop_on_signals(current: dict):
    """On SIGTERM/SIGINT: stop the running notebook's kernel, its process pool and Dask cluster, then raise.

    ``current["notebook"]`` names the notebook running (for the message). Raises
    :class:`RunInterrupted`; :func:`main` turns it into exit status 128 + signal.
    """
    def handler(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one stop at a time
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        what = current.get("notebook") or "the run"
        log.warning("%s received: stopping %s, its kernel and its worker processes (process pool, Dask cluster)",
                    signal.Signals(signum).name, what)
        n = stop_descendants()
        log.warning("stopped %d processes; finished notebooks and finished slides are kept, a rerun resumes", n)
        raise RunInterrupted(signum)

    if _in_main_thread():
        old = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    else:  # signals can only be caught in the main thread (e.g. a runner called from a thread)
        old = {}
    try:
        yield
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def clean_interrupted(out: Path) -> int:
    """Remove the temporary files an interrupted run left under ``out`` (call only under :func:`output_lock`)."""
    from .io import remove_temporary_files

    removed = remove_temporary_files(out)
    if removed:
        log.info("Removed %d temporary files left by an interrupted run (e.g. %s)", len(removed),
                 removed[0].relative_to(out))
    return len(removed)


def _running_copy(executed: Path) -> Path:
    """Where papermill writes a notebook while it runs; renamed to ``executed`` when it ends."""
    return executed.parent / f".{executed.name}.{os.getpid()}.tmp"


def _file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def executed_complete(executed: Path, stamp: dict | None) -> bool:
    """Whether an executed notebook is the finished one its stamp records: readable, no failed cell, same bytes."""
    if not stamp or not executed.is_file():
        return False
    if stamp.get("executed_sha256") and stamp["executed_sha256"] != _file_hash(executed):
        return False
    try:
        import nbformat

        nb = nbformat.read(str(executed), as_version=4)
    except Exception:  # truncated, two writers, not JSON: not a finished notebook
        return False
    pm = nb.metadata.get("papermill", {})
    if pm.get("exception"):
        return False
    return all(c.metadata.get("papermill", {}).get("status", "completed") == "completed"
               for c in nb.cells if c.cell_type == "code")


def run_profile(prof: Profile, out: Path, *, only: Sequence[str] | None = None, force: bool = False,
                kernel: str | None = None, finish: Callable[[list[dict]], None] | None = None,
                smoke: bool = False) -> list[dict]:
    """Run a profile's notebooks in order; returns one record per notebook (ran / skipped, seconds).

    The output directory is locked for the run (:func:`output_lock`); the
    temporary files of an interrupted run are removed first; SIGTERM/SIGINT
    stop the notebook's kernel and workers (:func:`stop_on_signals`).
    ``finish(records)`` (publishing figures, writing the report) runs while
    the lock is still held, so no other run can change the outputs it reads.
    ``smoke``: scale the profile's size keys down first (:func:`smoke_scale`); the scaled keys are logged and
    written to ``<out>/smoke.json`` and into each notebook's stamp (``.runner/<notebook>.json``).
    """
    from .io import write_json

    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    current: dict = {}
    with output_lock(out), stop_on_signals(current):
        clean_interrupted(out)
        smoke_changes = None
        if smoke:
            smoke_changes = smoke_scale(prof)
            log.info("--smoke: profile '%s' as it is, these size keys scaled down (histo_utils.run.SMOKE_SCALE):"
                     "\n%s", prof.name, describe_smoke(smoke_changes))
            write_json({"profile": str(prof.path), "scaled": smoke_changes,
                        "scale": {nb: {k: list(v) for k, v in keys.items()} for nb, keys in SMOKE_SCALE.items()}},
                       out / "smoke.json")
        else:
            (out / "smoke.json").unlink(missing_ok=True)
        records = _run_notebooks(prof, out, only=only, force=force, kernel=kernel, current=current,
                                 smoke=smoke_changes)
        if finish is not None:
            finish(records)
        return records


def _run_notebooks(prof: Profile, out: Path, *, only: Sequence[str] | None, force: bool, kernel: str | None,
                   current: dict, smoke: list[dict] | None = None) -> list[dict]:
    from papermill.exceptions import PapermillExecutionError

    from .io import write_json

    selected = list(prof.notebooks)
    if only:
        wanted = [_match_notebook(o, {s: prof.notebook_paths[s] for s in prof.notebooks}, prof.path,
                                  named_by=f"--only (with profile '{prof.path.name}')")
                  for o in split_only(only)]
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
        if not force and stamp and stamp.get("fingerprint") == fp and executed_complete(executed, stamp) \
                and (out / stem).exists():
            log.info("%s: unchanged since %s, skipped", stem, stamp.get("finished"))
            records.append({"notebook": stem, "status": "skipped", "seconds": 0.0})
            continue
        executed.parent.mkdir(parents=True, exist_ok=True)
        _stamp_path(out, stem).unlink(missing_ok=True)
        executed.unlink(missing_ok=True)  # a copy of an earlier run must not pass for this one's if it dies
        log.info("%s: running with %s", stem, json.dumps(params, default=str))
        current["notebook"] = stem
        running = _running_copy(executed)
        t0 = time.perf_counter()
        progress = _progress_of(stem, prof.notebook_paths[stem], stamp)
        try:
            _execute(prof.notebook_paths[stem], running, params, kernel=kernel, progress=progress)
        except PapermillExecutionError as e:
            os.replace(running, executed)  # complete, with the error: kept for reading (no stamp: not skipped)
            src = _cell_source(executed, e.exec_count)
            raise NotebookFailed(
                f"Notebook '{stem}' failed in cell {e.exec_count} ({e.ename}: {e.evalue}).\n"
                f"Cell source begins:\n{src}\nThe executed notebook is kept for reading: {executed}"
            ) from None
        secs = time.perf_counter() - t0
        os.replace(running, executed)
        write_json({"fingerprint": fp, "executed_sha256": _file_hash(executed), "parameters": params,
                    "smoke": None if smoke is None else [c for c in smoke if c["notebook"] == stem],
                    "seconds": secs, "cell_seconds": progress.cell_seconds,
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
    ap.add_argument("--smoke", action="store_true",
                    help="run the profile as it is with its size keys scaled down (epochs, tiles per slide, "
                         "permutations, folds, ...; histo_utils.run.SMOKE_SCALE): a check that a real-data "
                         "profile runs end to end, in minutes")
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
        report_failed: list[bool] = []

        def finish(records: list[dict]) -> None:  # under the output lock: nothing changes what it reads
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
                    report_failed.append(True)

        run_profile(prof, out, only=args.only, force=args.force, kernel=args.kernel, finish=finish,
                    smoke=args.smoke)
    except (ProfileError, NotebookFailed, OutputLocked) as e:
        log.error("%s", e)
        return 2
    except RunInterrupted as e:
        log.error("Run stopped by %s; rerun the same command to resume.", e)
        return 128 + e.signum
    return 1 if report_failed else 0


if __name__ == "__main__":
    sys.exit(main())
