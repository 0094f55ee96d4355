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
      01_tiling: {tile_px: [256]}

Every key is checked against the ``parameters`` cell of its notebook before
anything runs; a key no notebook declares stops the run (papermill itself
would only warn). Each notebook gets ``out_dir``, the run's output directory;
it writes under ``<out>/<notebook>/`` and its figures under
``<out>/figures/<notebook>/``. The executed copies go to ``<out>/notebooks/``
(kept when a notebook fails, for reading).

A notebook is skipped when its fingerprint matches the last successful run:
the notebook file, its parameters, the ``histo_utils`` sources, the
fingerprints of the notebooks whose results it reads (:func:`notebook_needs`, derived
from its code and :mod:`histo_utils.products`), and the names, sizes and times of the
files under each folder or file its parameters name, unless a notebook of this
run made them (see :func:`_external_inputs`), wherever they lie.

After the notebooks, one line per notebook that left inputs out (slides it
could not tile, samples the join dropped) names the count and the file that
lists them (:data:`REPORT_FILES`).
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import difflib
import errno
import hashlib
import json
import logging
import os
import shutil
import signal
import sys
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import yaml

from . import products
from .progress import KERNEL_ARGUMENTS, NotebookProgress, QuietPapermill
from .report import write_report
from .errors import HistoUtilsError, InputError, StateError
from .io import remove_temporary_files, write_json

log = logging.getLogger("histo_utils.run")

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS_DIR = ROOT / "notebooks"
PARAMS_DIR = ROOT / "params"
PACKAGE_DIR = Path(__file__).resolve().parent


class ProfileError(InputError):
    """A parameter profile that cannot be run as written."""


class NotebookFailed(StateError):
    """A notebook raised; the message names it and the failing cell."""


class OutputLocked(StateError):
    """Another runner is writing to the same output directory."""


class OutputUnwritable(StateError):
    """The output directory (or the --publish folder) cannot be written: full, read-only, no permission."""


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
    """The notebooks whose results a notebook reads, derived from its code (:func:`histo_utils.products.notebook_reads`).

    The products of other notebooks it names (``products.outputs(out_dir, "03_feature_correlation").pairs``),
    those read by the package functions it calls with ``out_dir`` (``data.load_tiling``: declared with
    :func:`histo_utils.products.reads`) and the folders earlier notebooks write where its parameters point
    (``data_dir``).

    Returns
    -------
    list of notebook names (``[]``: self-contained), or None: every earlier notebook, when the reads cannot be
    known (a call given ``out_dir`` that declares no reads, e.g. ``Path(out_dir) / "01_tiling"``; logged).

    Raises
    ------
    ProfileError
        The notebook names a notebook or an output that is not declared (it would fail when it runs).
    """
    try:
        found = products.notebook_reads(notebook)
    except products.ProductKeyError as e:
        raise ProfileError(f"Notebook '{notebook.name}': {e}") from None
    if found.unknown:
        log.info("%s: cannot tell what %s read%s (no products.reads declaration); it counts every earlier "
                 "notebook as its input", notebook.stem, ", ".join(found.unknown), "s" if len(found.unknown) == 1
                 else "")
        return None
    return found.upstream


def _upstream(needs: list[str] | None, earlier: Sequence[str]) -> list[str]:
    if needs is None:
        return list(earlier)
    return [s for s in earlier if s in needs or s.split("_")[0] in needs]


#: Largest profile file read (bytes): a profile holds a few kB of parameters; a bigger file is not one.
PROFILE_MAX_BYTES = 1_000_000


class _RefusedAlias(HistoUtilsError, yaml.MarkedYAMLError):
    """A YAML alias (``*name``) in a profile."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML safe loader that refuses a key given twice in one mapping (YAML itself keeps the last) and aliases.

    Aliases are refused where the document is composed, before anything is built from them: a few nested
    aliases of a few hundred bytes stand for billions of values once a value is copied or printed.
    """

    def compose_node(self, parent, index):  # noqa: D102 - yaml.composer.Composer
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise _RefusedAlias(None, None, f"found the alias '*{event.anchor}'", event.start_mark)
        return super().compose_node(parent, index)


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
    """Parse a profile file: YAML errors name the file and line; duplicated keys, aliases and big files are refused.

    Parameters
    ----------
    path : Path
        The profile file.

    Returns
    -------
    dict
        The top-level mapping (empty for an empty file).

    Raises
    ------
    ProfileError
        Invalid YAML, a key given twice, a YAML alias (``*name``: a few nested ones expand to gigabytes, the
        "billion laughs"), a file over :data:`PROFILE_MAX_BYTES`, or a file that cannot be read.
    """
    try:
        with open(path, "rb") as fh:
            data = fh.read(PROFILE_MAX_BYTES + 1)
    except OSError as e:
        raise ProfileError(f"Profile '{path}' cannot be read: {e.strerror or e}. Check the path given to "
                           "--params (a YAML file) and its permissions.") from None
    if len(data) > PROFILE_MAX_BYTES:
        raise ProfileError(f"Profile '{path}' is larger than {PROFILE_MAX_BYTES / 1e6:g} MB "
                           f"(histo_utils.run.PROFILE_MAX_BYTES); a profile holds a few kB of parameters "
                           "(see params/tiny.yaml). Check that --params names a profile, not a data file.")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ProfileError(f"Profile '{path}' is not UTF-8 text (byte {e.start}); a profile is a YAML text file "
                           "(see params/tiny.yaml). Check that --params names a profile.") from None
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)
    except _RefusedAlias as e:
        mark = e.problem_mark
        raise ProfileError(
            f"Profile '{path}' at line {mark.line + 1}, column {mark.column + 1}: {e.problem}. Profiles do not "
            "accept YAML anchors and aliases (&name, *name, <<: *name): a few nested aliases expand to "
            "gigabytes. Write the value out in full where it is used.") from None
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


#: Parameters renamed so that one quantity has one name in every notebook, profile and config (issue 29):
#: a tile side in px at target_mpp is ``tile_px`` (a role prefixes it: ``train_tile_px``, ``feature_tile_px``);
#: the side a network sees is ``input_px``; the epochs without improvement before a decay on plateau are
#: ``lr_patience`` (``TrainConfig`` has the same field names). A profile with an old name is refused, naming the new one.
RENAMED_PARAMETERS: dict[str, str] = {"tile_sizes_px": "tile_px", "out_px": "input_px",
                                      "plateau_epochs": "lr_patience"}


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
            if k not in declared and RENAMED_PARAMETERS.get(k) in declared:
                raise ProfileError(
                    f"Profile '{path.name}': parameter '{k}' of notebook '{stem}' was renamed to "
                    f"'{RENAMED_PARAMETERS[k]}' (one name per quantity, see RENAMED_PARAMETERS in "
                    f"histo_utils/run.py): write '{RENAMED_PARAMETERS[k]}' instead.")
            if k not in declared:
                raise ProfileError(
                    f"Profile '{path.name}': parameter '{k}' is not declared by notebook '{stem}' "
                    f"(typo?).{_closest(k, declared)} Its parameters are: {sorted(declared)}")
        _check_types(path, f"notebook '{stem}'", params, prof.types[stem])
    for k in common:
        users = [s for s, d in prof.declared.items() if k in d]
        if not users and k in RENAMED_PARAMETERS:
            raise ProfileError(f"Profile '{path.name}': common parameter '{k}' was renamed to "
                               f"'{RENAMED_PARAMETERS[k]}' (one name per quantity): write "
                               f"'{RENAMED_PARAMETERS[k]}' instead.")
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
            value = _param_value(prof, stem, {**prof.common, **params}, key)  # profile's, else the cell's default
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


#: Folders of ``<out>`` that the runner, the notebooks' shared helpers and the report write, besides each
#: notebook's own ``<out>/<notebook>/``: never an input of the run.
RUN_FOLDERS = ("notebooks", ".runner", products.FIGURES_DIR, "report", "cache", "store")

#: Folders named by a parameter that a notebook writes (for itself and later notebooks to read):
#: ``notebook -> {parameter: switch}``; the folder is the notebook's output when ``switch`` is None, or when the
#: notebook's parameter ``switch`` is true (08 paints the synthetic tumour cohort only with ``make_synthetic``).
#: Declared in :mod:`histo_utils.products` (outputs with a ``parameter``).
NOTEBOOK_WRITES: dict[str, dict[str, str | None]] = products.parameter_folders()


def _param_value(prof: Profile, stem: str, params: dict[str, Any], key: str) -> Any:
    """A notebook's parameter as it runs: the profile's (resolved) value, else the parameters cell's default."""
    if key in params:
        return params[key]
    default = prof.declared.get(stem, {}).get(key)
    with contextlib.suppress(ValueError, SyntaxError):
        return ast.literal_eval(str(default))
    return default


def written_folders(prof: Profile, stem: str, params: dict[str, Any]) -> list[Path]:
    """The folders named by parameters that notebook ``stem`` writes with these parameters (:data:`NOTEBOOK_WRITES`).

    Only absolute paths (the runner's profiles give ``{out}/...`` or absolute folders).
    """
    found = []
    for key, switch in NOTEBOOK_WRITES.get(stem, {}).items():
        value = _param_value(prof, stem, params, key)
        if not isinstance(value, str) or not value or not Path(value).is_absolute():
            continue
        if switch is None or bool(_param_value(prof, stem, params, switch)):
            found.append(Path(value))
    return found


def _real(path: str | os.PathLike) -> Path:
    return Path(os.path.realpath(path))


def _within(path: Path, roots) -> bool:
    return any(path == r or r in path.parents for r in roots)


def _input_files(path: Path, skip: set[Path]) -> list[Path]:
    """The files of an input: itself, or every file under the folder (links followed once), ``skip`` left out."""
    if path.is_file():
        return [path]
    files, seen = [], set()
    for dirpath, dirnames, filenames in os.walk(path, followlinks=True):
        here = _real(dirpath)
        if here in seen:  # a link back to a folder already walked
            dirnames[:] = []
            continue
        seen.add(here)
        dirnames[:] = sorted(n for n in dirnames if not _within(_real(Path(dirpath) / n), skip))
        files.extend(q for q in (Path(dirpath) / n for n in sorted(filenames)) if q.is_file())
    return files


def _external_inputs(params: dict[str, Any], out: Path, *, made: Sequence[Path] = ()) -> str:
    """Fingerprint of the files and folders named by a notebook's parameters, unless this run made them.

    A run's inputs are fingerprinted wherever they lie, inside the output directory or around it; what a
    notebook of this run made is not, because its fingerprint already stands for it. For every parameter
    holding an absolute path that exists (``out_dir`` aside), the names, sizes and modification times of its
    files enter the hash, except:

    - a path inside ``made``: the run's own folders (``<out>/<notebook>/`` of the profile's notebooks,
      :data:`RUN_FOLDERS`) and the folders the notebook itself, or a notebook upstream of it, writes
      (:data:`NOTEBOOK_WRITES`). ``data_dir: "{out}/data"`` with notebook 00 in the profile is 00's output:
      hashing it as 00's input would rerun 00 every time, and later notebooks see a change of it through
      00's fingerprint. Without 00 (the gtex profile), the same folder holds the user's download and is
      hashed, so a deleted or replaced slide reruns the notebooks that read it;
    - inside a folder being hashed, the output directory itself (``--out`` inside ``data_dir``): the run's
      results are not its inputs (a user's input inside ``--out`` is named by its own parameter and hashed
      through it), and folders listed in ``made``.

    Links to folders are followed (a ``slides/`` linked to another disk is part of the data), each real
    folder once.
    """
    out_r = _real(out)
    made_r = {_real(p) for p in made}
    h = hashlib.sha256()
    for k, v in sorted(params.items()):
        if not isinstance(v, str) or k == "out_dir" or not v or "\n" in v:
            continue
        p = Path(v)
        if not p.is_absolute() or not p.exists():
            continue
        p = _real(p)
        if p == out_r or _within(p, made_r):
            continue  # made by a notebook of this run: covered by its fingerprint
        for q in _input_files(p, made_r | {out_r}):
            st = q.stat()
            h.update(f"{q}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()


def fingerprint(notebook: Path, params: dict[str, Any], upstream: Sequence[str], out: Path, *,
                made: Sequence[Path] = ()) -> str:
    """Hash of everything a notebook's results depend on.

    Parameters
    ----------
    notebook : Path
        The notebook file.
    params : dict
        Its parameters as papermill gets them.
    upstream : sequence of str
        The fingerprints of the notebooks whose results it reads.
    out : Path
        The run's output directory.
    made : sequence of Path
        Folders this run's notebooks make, not hashed as inputs (see :func:`_external_inputs`).
    """
    h = hashlib.sha256()
    h.update(notebook.read_bytes())
    h.update(json.dumps(params, sort_keys=True, default=str).encode())
    h.update(_package_hash().encode())
    h.update(_external_inputs(params, out, made=made).encode())
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


def kernel_runtime_dir(out: Path) -> Path:
    """Where the kernels of a run on ``out`` write their connection files: ``<out>/.runner/kernels/``.

    jupyter_client would write them to ``/tmp/tmp*.json``, where those of a runner killed hard (SIGKILL, power
    loss) stay forever; here :func:`clean_interrupted` removes them at the start of the next run.
    """
    return out / ".runner" / "kernels"


def clean_interrupted(out: Path) -> int:
    """Remove what an interrupted run left under ``out``: temporary files, kernel connection files.

    Call only under :func:`output_lock` (no kernel of a live run uses the connection files then).
    """
    removed = remove_temporary_files(out)
    runtime = kernel_runtime_dir(out)
    if runtime.is_dir():
        for f in sorted(runtime.iterdir()):
            if f.is_file() or f.is_symlink():
                f.unlink(missing_ok=True)
                removed.append(f)
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
    stop the notebook's kernel and workers (:func:`stop_on_signals`). An OS
    error writing under ``out`` (full disk, read-only, no permission) stops the
    run as :class:`OutputUnwritable`, the running notebook's temporary copy
    removed. After the notebooks, :func:`summarise_left_out` logs one line per
    notebook that skipped slides or dropped samples.
    ``finish(records)`` (publishing figures, writing the report) runs while
    the lock is still held, so no other run can change the outputs it reads.
    ``smoke``: scale the profile's size keys down first (:func:`smoke_scale`); the scaled keys are logged and
    written to ``<out>/smoke.json`` and into each notebook's stamp (``.runner/<notebook>.json``).
    """
    out = out.resolve()
    current: dict = {}
    try:
        out.mkdir(parents=True, exist_ok=True)
        with output_lock(out), stop_on_signals(current):
            clean_interrupted(out)
            smoke_changes = None
            if smoke:
                smoke_changes = smoke_scale(prof)
                log.info("--smoke: profile '%s' as it is, these size keys scaled down "
                         "(histo_utils.run.SMOKE_SCALE):\n%s", prof.name, describe_smoke(smoke_changes))
                write_json({"profile": str(prof.path), "scaled": smoke_changes,
                            "scale": {nb: {k: list(v) for k, v in keys.items()}
                                      for nb, keys in SMOKE_SCALE.items()}}, out / "smoke.json")
            else:
                (out / "smoke.json").unlink(missing_ok=True)
            records = _run_notebooks(prof, out, only=only, force=force, kernel=kernel, current=current,
                                     smoke=smoke_changes)
            summarise_left_out(out, [r["notebook"] for r in records])
            if finish is not None:
                finish(records)
            return records
    except OSError as e:
        refusal = unwritable(e, out)
        if refusal is None:
            raise
        raise refusal from e


def _run_notebooks(prof: Profile, out: Path, *, only: Sequence[str] | None, force: bool, kernel: str | None,
                   current: dict, smoke: list[dict] | None = None) -> list[dict]:
    from papermill.exceptions import PapermillExecutionError


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
    run_folders = [out / d for d in RUN_FOLDERS] + [out / s for s in prof.notebooks]
    written: dict[str, list[Path]] = {}
    for stem in prof.notebooks:
        params = resolve_parameters(prof, stem, out)
        written[stem] = written_folders(prof, stem, params)
        covered = [s for s in upstream_of[stem] if s in prints]  # their fingerprints enter this one
        upstream = [prints[s] for s in covered]
        made = run_folders + written[stem] + [p for s in covered for p in written[s]]
        fp = fingerprint(prof.notebook_paths[stem], params, upstream, out, made=made)
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
            _execute(prof.notebook_paths[stem], running, params, kernel=kernel, progress=progress,
                     runtime_dir=kernel_runtime_dir(out))
        except PapermillExecutionError as e:
            os.replace(running, executed)  # complete, with the error: kept for reading (no stamp: not skipped)
            src = _cell_source(executed, e.exec_count)
            raise NotebookFailed(
                f"Notebook '{stem}' failed in cell {e.exec_count} ({e.ename}: {e.evalue}).\n"
                f"Cell source begins:\n{src}\nThe executed notebook is kept for reading: {executed}"
            ) from None
        except BaseException:  # a full disk, a stop: nothing half-written stays behind
            with contextlib.suppress(OSError):
                running.unlink(missing_ok=True)
            raise
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


def _kernel_manager_class(runtime_dir: Path) -> type:
    """jupyter_client's kernel manager, writing its connection file into ``runtime_dir`` (not ``/tmp``)."""
    from jupyter_client import AsyncKernelManager
    from traitlets import default

    class RunKernelManager(AsyncKernelManager):
        @default("connection_file")
        def _connection_file_in_run(self) -> str:
            return str(runtime_dir / f"kernel-{os.getpid()}-{uuid.uuid4().hex[:12]}.json")

    return RunKernelManager


def _execute(notebook: Path, executed: Path, params: dict[str, Any], *, kernel: str | None,
             progress: NotebookProgress, runtime_dir: Path | None = None) -> None:
    """Run one notebook with papermill, its cells and inner tqdm bars shown by ``progress``.

    ``runtime_dir``: where the kernel's connection file goes (:func:`kernel_runtime_dir`); jupyter_client's
    default (a ``/tmp/tmp*.json``) when None.
    """
    import papermill

    extra = {}
    if runtime_dir is not None:
        runtime_dir.mkdir(parents=True, exist_ok=True)
        extra["kernel_manager_class"] = _kernel_manager_class(runtime_dir)
    try:
        papermill.execute_notebook(
            str(notebook), str(executed), parameters=params, kernel_name=kernel,
            progress_bar=False, log_output=False, cwd=str(notebook.parent),
            stderr_file=progress, on_cell_start=progress.on_cell_start,
            on_cell_executed=progress.on_cell_executed, extra_arguments=KERNEL_ARGUMENTS, **extra,
        )
    finally:
        progress.close()


# --------------------------------------------------------------------------
# what the notebooks left out, and OS errors on the output
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class ReportFile:
    """A table a notebook writes that lists the inputs it left out (see :data:`REPORT_FILES`).

    Parameters
    ----------
    notebook : str
        The notebook (``01_tiling``).
    key : str
        The table's key among the notebook's outputs (:mod:`histo_utils.products`): one row per input or per
        kind of problem; the file is :attr:`file` in ``<out>/<notebook>/``.
    what : str
        What a counted row is, for the console line (``slides skipped``).
    column : str
        The column that says whether a row was used.
    ok : tuple of str
        The values of ``column`` of the rows that were used (not reported).
    name : str
        The column naming each row (a few are shown as examples).
    count : str, optional
        A column of counts: the row is a kind of problem (``name``) and ``count`` inputs had it; None: one
        input per row.
    """

    notebook: str
    key: str
    what: str
    column: str = "status"
    ok: tuple[str, ...] = ("ok",)
    name: str = "image_id"
    count: str | None = None

    @property
    def file(self) -> str:
        """The table's file name, as :mod:`histo_utils.products` declares it."""
        return products.file_name(self.notebook, self.key)


#: The tables that list what each notebook left out, summarised on the console after a run
#: (:func:`summarise_left_out`). A notebook that writes another such table adds a line here.
REPORT_FILES: tuple[ReportFile, ...] = (
    ReportFile("01_tiling", "slides", "slides skipped"),
    ReportFile("01_tiling", "join_report", "left out by the slide-RNA join", column="problem",
               ok=("expression without slide", "tissue without slides (left out)"), name="problem", count="count"),
    ReportFile("08_hti_survival", "slides", "slides skipped"),
)


def left_out(out: Path, notebook: str) -> str | None:
    """One line saying what a notebook left out and which files list it (:data:`REPORT_FILES`), or None.

    Example: ``01_tiling: 11 of 25 slides skipped (GTEX-1117F-0126, ...), listed with the reason in
    /runs/x/01_tiling/slides.tsv``. A table that is missing or cannot be read is passed over (logged at
    debug level): the summary never stops a run.
    """
    import pandas as pd

    parts = []
    for rf in REPORT_FILES:
        if rf.notebook != notebook:
            continue
        path = out / rf.notebook / rf.file
        if not path.is_file():
            continue
        try:
            df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
            bad = df[~df[rf.column].isin(rf.ok)]
            if rf.count is not None:
                counts = pd.to_numeric(bad[rf.count], errors="coerce").fillna(0).astype(int)
                kinds = [f"{n} × {k}" for k, n in zip(bad[rf.name], counts) if n > 0]
                if kinds:
                    parts.append(f"{rf.what}: {', '.join(kinds)}, listed in {path}")
                continue
        except (OSError, ValueError, KeyError) as e:
            log.debug("could not summarise %s: %s", path, e)
            continue
        if len(bad):
            names = list(bad[rf.name]) if rf.name in bad else []
            examples = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
            parts.append(f"{len(bad)} of {len(df)} {rf.what}" + (f" ({examples})" if examples else "")
                         + f", listed with the reason in {path} ({rf.column} not {' / '.join(rf.ok)})")
    return f"{notebook}: " + "; ".join(parts) if parts else None


def summarise_left_out(out: Path, notebooks: Sequence[str]) -> list[str]:
    """Log (warning) one line per notebook that skipped slides or dropped samples (:func:`left_out`)."""
    lines = [line for nb in notebooks if (line := left_out(out, nb)) is not None]
    for line in lines:
        log.warning("%s", line)
    return lines


_UNWRITABLE_FIX = {
    errno.ENOSPC: "its disk is full: free space on it or choose another {option}",
    errno.EDQUOT: "your disk quota there is used up: free space or choose another {option}",
    errno.EROFS: "it is on a read-only file system: choose another {option}",
    errno.EACCES: "you may not write there: change its permissions or choose another {option}",
    errno.EPERM: "you may not write there: change its permissions or choose another {option}",
}


def unwritable(error: OSError, folder: Path, *, option: str = "--out",
               what: str = "the output directory") -> OutputUnwritable | None:
    """One line for an OS error writing under ``folder`` (full, read-only, no permission); None if not about it.

    An error naming a file is about ``folder`` when the file lies under it; an error naming none (a ``write``
    that found the disk full) when it is one of full disk, quota or read-only file system.
    """
    name = error.filename
    if name is not None:
        folder_r = _real(folder)
        path = Path(os.path.abspath(os.fsdecode(name)))
        if not (_within(path, {folder, folder_r}) or _within(_real(path), {folder_r})):
            return None
    elif error.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
        return None
    cause = error.strerror or str(error)
    where = f" (writing '{os.fsdecode(name)}')" if name is not None else ""
    fix = _UNWRITABLE_FIX.get(error.errno, "check the folder or choose another {option}").format(option=option)
    return OutputUnwritable(f"Cannot write to {what} '{folder}': {cause}{where}. {fix[0].upper()}{fix[1:]}.")


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
        src = products.figure_folder(out, stem)
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
                try:
                    n = publish_figures(out.resolve(), args.publish.resolve(), [r["notebook"] for r in records])
                except OSError as e:
                    refusal = unwritable(e, args.publish.resolve(), option="--publish", what="the --publish folder")
                    if refusal is None:
                        raise
                    raise refusal from e
                log.info("published %d figure files to %s", n, args.publish)
            if not args.no_report:
                try:
                    write_report(out)
                except Exception as e:  # the notebooks' results stand; say why the report is missing
                    refusal = unwritable(e, out.resolve()) if isinstance(e, OSError) else None
                    if refusal is not None:
                        log.error("The report was not written. %s", refusal)
                    else:
                        log.exception("writing the report of %s failed", out)
                    report_failed.append(True)

        run_profile(prof, out, only=args.only, force=args.force, kernel=args.kernel, finish=finish,
                    smoke=args.smoke)
    except (ProfileError, NotebookFailed, OutputLocked, OutputUnwritable) as e:
        log.error("%s", e)
        return 2
    except RunInterrupted as e:
        log.error("Run stopped by %s; rerun the same command to resume.", e)
        return 128 + e.signum
    return 1 if report_failed else 0


if __name__ == "__main__":
    sys.exit(main())
