"""The runner against hostile but realistic input (issue 28, the runner's cases).

- case 6: a YAML alias bomb, and profiles too big to be one;
- case 11: a full or read-only ``--out``: one line naming the folder and the cause, no temporary file left;
- cases 4 and 13: a run's inputs are fingerprinted unless a notebook of this run made them, wherever they lie;
- case 14: kernel connection files go under ``<out>/.runner/kernels/`` (not ``/tmp``), removed by the next run;
- case 15: a console line per notebook that skipped slides, with the file that lists them.

The runner is exercised on toy notebooks (``conftest.write_toy_notebook``), never on the real ones.
"""
from __future__ import annotations

import ast
import errno
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml
from conftest import write_toy_notebook
from histo_utils import run

PYTHONPATH = {**os.environ, "PYTHONPATH": str(Path(run.__file__).parents[1])}


def _profile(path: Path, data: dict, nbdir: Path) -> run.Profile:
    path.write_text(yaml.safe_dump(data))
    return run.load_profile(path, notebooks_dir=nbdir)


def _statuses(records: list[dict]) -> list[str]:
    return [r["status"] for r in records]


# --------------------------------------------------------------------------
# case 6: alias bomb, size cap
# --------------------------------------------------------------------------
BOMB = """\
description:
  - &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
  - &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
  - &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
  - &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
  - &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
  - &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
  - &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
  - &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
  - &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
common:
  seed: *i
notebooks:
  00_make: {}
"""


@pytest.fixture
def seed_notebook(tmp_path):
    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    write_toy_notebook(nbdir / "00_make.ipynb", 'out_dir: str = "x"  # output\nseed: int = 0  # a seed\n', "pass\n")
    return nbdir


def test_profile_alias_refused_naming_file_line_and_fix(tmp_path, seed_notebook):
    p = tmp_path / "p.yaml"
    p.write_text("common:\n  seed: &s 3\nnotebooks:\n  00_make: {seed: *s}\n")
    with pytest.raises(run.ProfileError, match=r"^Profile '.*p\.yaml' at line 4, column 19: found the alias '\*s'\. "
                                               r"Profiles do not accept YAML anchors and aliases .* Write the value "
                                               r"out in full where it is used\.$"):
        run.load_profile(p, notebooks_dir=seed_notebook)


def test_profile_alias_bomb_refused_before_it_expands(tmp_path, seed_notebook):
    """420 bytes that stand for 387 million strings: refused in a second, in a process allowed 1.5 GB."""
    p = tmp_path / "bomb.yaml"
    p.write_text(BOMB)
    code = textwrap.dedent(f"""\
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (1_500_000_000, 1_500_000_000))
        from pathlib import Path
        from histo_utils import run
        try:
            run.load_profile(Path({str(p)!r}), notebooks_dir=Path({str(seed_notebook)!r}))
        except run.ProfileError as e:
            print("REFUSED", e)
        """)
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=PYTHONPATH)
    assert r.returncode == 0 and r.stdout.startswith("REFUSED"), (r.stdout + r.stderr)[-800:]
    assert "found the alias '*a'" in r.stdout and "bomb.yaml' at line 3" in r.stdout
    assert time.perf_counter() - t0 < 60


def test_profile_over_the_size_cap_refused(tmp_path, seed_notebook):
    p = tmp_path / "expression.yaml"
    p.write_text("notebooks:\n  00_make: {}\n" + "# " + "x" * 1_100_000 + "\n")
    with pytest.raises(run.ProfileError, match=r"expression\.yaml' is larger than 1 MB .*Check that --params names "
                                               r"a profile, not a data file\."):
        run.load_profile(p, notebooks_dir=seed_notebook)


# --------------------------------------------------------------------------
# case 11: a full or read-only --out
# --------------------------------------------------------------------------
@pytest.fixture
def one_notebook(tmp_path, monkeypatch):
    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    write_toy_notebook(nbdir / "00_make.ipynb", 'out_dir: str = "x"  # output\n',
                       "from pathlib import Path\nPath(out_dir, '00_make').mkdir(parents=True, exist_ok=True)\n"
                       "x = 1\n")
    monkeypatch.setattr(run, "NOTEBOOKS_DIR", nbdir)
    p = tmp_path / "p.yaml"
    p.write_text("notebooks:\n  00_make: {}\n")
    return p


def _errors(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]


def test_full_disk_while_a_notebook_runs_is_one_line_and_leaves_no_temporary_file(tmp_path, one_notebook,
                                                                                  monkeypatch, caplog):
    """The disk fills while papermill saves the running notebook: one line, exit 2, its .tmp removed."""
    import papermill.engines

    real = papermill.engines.write_ipynb
    calls: list[str] = []

    def full_disk(nb, path):  # the first saves succeed (kernel started, a cell ran), then the disk is full
        calls.append(path)
        if len(calls) < 3:
            return real(nb, path)
        Path(path).write_text('{"cells": [')  # what a write into a full disk leaves
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(papermill.engines, "write_ipynb", full_disk)
    out = tmp_path / "out"
    assert run.main(["--params", str(one_notebook), "--out", str(out), "--no-report"]) == 2
    assert len(calls) >= 3
    assert _errors(caplog) == [f"Cannot write to the output directory '{out.resolve()}': No space left on device. "
                               "Its disk is full: free space on it or choose another --out."]
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    assert not list(run.kernel_runtime_dir(out).glob("*"))  # the kernel was shut down, its file removed


def test_read_only_out_is_one_line(tmp_path, one_notebook, monkeypatch, caplog):
    out = tmp_path / "ro"
    out.mkdir()
    os.chmod(out, 0o555)
    try:
        (out / "probe").touch()
    except PermissionError:
        pass  # a user: the permission stops the write
    else:  # root writes anywhere: make the first file the runner creates there fail as a read-only mount does
        (out / "probe").unlink()
        real_open = os.open

        def read_only(path, flags, *a, **k):
            if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and str(path).startswith(str(out)):
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
            return real_open(path, flags, *a, **k)

        monkeypatch.setattr(os, "open", read_only)
    try:
        assert run.main(["--params", str(one_notebook), "--out", str(out), "--no-report"]) == 2
    finally:
        os.chmod(out, 0o755)
    [msg] = _errors(caplog)
    assert msg.startswith(f"Cannot write to the output directory '{out.resolve()}': ")
    assert msg.endswith(("It is on a read-only file system: choose another --out.",
                         "You may not write there: change its permissions or choose another --out."))
    assert "\n" not in msg and "(writing '" in msg


def test_unwritable_names_only_errors_about_the_folder(tmp_path):
    out = tmp_path / "out"
    elsewhere = OSError(errno.EACCES, "Permission denied", str(tmp_path / "data" / "x.svs"))
    assert run.unwritable(elsewhere, out) is None  # an unreadable input is not the output's fault
    assert run.unwritable(OSError(errno.EIO, "Input/output error"), out) is None
    msg = str(run.unwritable(OSError(errno.EDQUOT, "Disk quota exceeded", str(out / "a" / "b.tsv")), out))
    assert msg == (f"Cannot write to the output directory '{out}': Disk quota exceeded (writing '{out}/a/b.tsv'). "
                   "Your disk quota there is used up: free space or choose another --out.")


# --------------------------------------------------------------------------
# cases 4 and 13: what is an input
# --------------------------------------------------------------------------
@pytest.fixture
def data_notebooks(tmp_path, monkeypatch):
    """00 writes three files into data_dir; 01 counts the files of data_dir."""
    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    write_toy_notebook(nbdir / "00_make.ipynb", 'out_dir: str = "x"  # output\ndata_dir: str = ""  # data\n',
                       "from pathlib import Path\nPath(out_dir, '00_make').mkdir(parents=True, exist_ok=True)\n"
                       "Path(data_dir).mkdir(parents=True, exist_ok=True)\n"
                       "for i in range(3):\n    Path(data_dir, f'slide{i}.svs').write_text('x' * (i + 1))\n")
    write_toy_notebook(nbdir / "01_read.ipynb", 'out_dir: str = "x"  # output\ndata_dir: str = ""  # data\n',
                       "from pathlib import Path\nd = Path(out_dir, '01_read')\nd.mkdir(parents=True, exist_ok=True)\n"
                       "(d / 'n.txt').write_text(str(len(list(Path(data_dir).glob('*.svs')))))\n")
    monkeypatch.setattr(run, "NOTEBOOK_WRITES", {"00_make": {"data_dir": None}}, raising=False)
    return nbdir


def _user_data(folder: Path, n: int = 3) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"GTEX-{i}.svs").write_text("slide" * (i + 1))
    return folder


def test_data_dir_inside_out_is_fingerprinted(tmp_path, data_notebooks):
    """Case 4: a download kept in --out is the user's data, not an earlier notebook's: a deleted slide reruns."""
    out = tmp_path / "out"
    data = _user_data(out / "gtex")
    prof = _profile(tmp_path / "p.yaml", {"common": {"data_dir": "{out}/gtex"}, "notebooks": {"01_read": {}}},
                    data_notebooks)
    assert _statuses(run.run_profile(prof, out)) == ["ran"]
    assert _statuses(run.run_profile(prof, out)) == ["skipped"]
    (data / "GTEX-1.svs").unlink()
    assert _statuses(run.run_profile(prof, out)) == ["ran"]
    assert (out / "01_read" / "n.txt").read_text() == "2"
    (data / "GTEX-2.svs").write_text("corrupt")  # another size
    assert _statuses(run.run_profile(prof, out)) == ["ran"]


def test_out_inside_data_dir_does_not_rerun(tmp_path, data_notebooks):
    """Case 13: the run's own outputs under data_dir are not its inputs; the user's files still are."""
    data = _user_data(tmp_path / "gtex")
    out = data / "runs" / "mine"
    prof = _profile(tmp_path / "p.yaml", {"common": {"data_dir": str(data)}, "notebooks": {"01_read": {}}},
                    data_notebooks)
    assert _statuses(run.run_profile(prof, out)) == ["ran"]
    assert _statuses(run.run_profile(prof, out)) == ["skipped"]
    (data / "GTEX-9.svs").write_text("new slide")
    assert _statuses(run.run_profile(prof, out)) == ["ran"]


def test_data_made_by_a_notebook_of_the_run_is_covered_by_its_fingerprint(tmp_path, data_notebooks):
    """00 writes data_dir (outside --out here): not 00's input (else 00 reruns for ever), 01 sees it through
    00's fingerprint; without 00 in the profile the same folder is the user's and is hashed."""
    gen = tmp_path / "generated"
    out = tmp_path / "out"
    prof = _profile(tmp_path / "p.yaml",
                    {"common": {"data_dir": str(gen)}, "notebooks": {"00_make": {}, "01_read": {}}}, data_notebooks)
    assert _statuses(run.run_profile(prof, out)) == ["ran", "ran"]
    assert _statuses(run.run_profile(prof, out)) == ["skipped", "skipped"]
    only01 = _profile(tmp_path / "q.yaml", {"common": {"data_dir": str(gen)}, "notebooks": {"01_read": {}}},
                      data_notebooks)
    out2 = tmp_path / "out2"
    assert _statuses(run.run_profile(only01, out2)) == ["ran"]
    (gen / "slide0.svs").unlink()
    assert _statuses(run.run_profile(only01, out2)) == ["ran"]
    assert (out2 / "01_read" / "n.txt").read_text() == "2"


def test_written_folders_follow_the_switch():
    nb = Path("08_hti_survival.ipynb")
    prof = run.Profile(name="p", path=Path("p.yaml"), common={}, notebooks={"08_hti_survival": {}},
                       notebook_paths={"08_hti_survival": nb},
                       declared={"08_hti_survival": {"out_dir": "'x'", "tumour_dir": "'../t'",
                                                     "make_synthetic": "True"}})
    assert run.written_folders(prof, "08_hti_survival", {"tumour_dir": "/o/tumour"}) == [Path("/o/tumour")]
    assert run.written_folders(prof, "08_hti_survival", {"tumour_dir": "/data/brca", "make_synthetic": False}) == []
    assert run.written_folders(prof, "08_hti_survival", {}) == []  # a relative default is not fingerprinted


# --------------------------------------------------------------------------
# case 14: kernel connection files after a hard kill
# --------------------------------------------------------------------------
def test_kernel_connection_file_of_a_killed_runner_is_under_out_and_removed_next_run(tmp_path):
    import psutil

    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    write_toy_notebook(nbdir / "00_wait.ipynb", 'out_dir: str = "x"  # output\n',
                       "import time\nfrom pathlib import Path\nPath(out_dir, '00_wait').mkdir(exist_ok=True)\n"
                       "Path(out_dir, 'started').write_text('')\ntime.sleep(300)\n")
    (tmp_path / "p.yaml").write_text("notebooks:\n  00_wait: {}\n")
    out = tmp_path / "out"
    tmpdir = tmp_path / "tmpdir"  # the runner's /tmp
    tmpdir.mkdir()
    code = ("import sys; from pathlib import Path; from histo_utils import run\n"
            f"run.NOTEBOOKS_DIR = Path({str(nbdir)!r})\n"
            f"sys.exit(run.main(['--params', {str(tmp_path / 'p.yaml')!r}, '--out', {str(out)!r}, '--no-report']))")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**PYTHONPATH, "TMPDIR": str(tmpdir)})
    kids: list = []
    try:
        t0 = time.time()
        while not (out / "started").exists() and time.time() - t0 < 120 and proc.poll() is None:
            time.sleep(0.2)
        assert (out / "started").exists()
        kids = psutil.Process(proc.pid).children(recursive=True)
        proc.kill()  # SIGKILL: no cleanup of any kind
        proc.wait(timeout=30)
        assert not list(tmpdir.glob("*.json")), "connection file left in the runner's temporary folder"
        left = list(run.kernel_runtime_dir(out).glob("kernel-*.json"))
        assert len(left) == 1
        for p in kids:  # the orphaned kernel
            p.kill()
        psutil.wait_procs(kids, timeout=10)
        assert run.clean_interrupted(out) >= 1
        assert not list(run.kernel_runtime_dir(out).iterdir())
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        for p in kids:
            if p.is_running():
                p.kill()


# --------------------------------------------------------------------------
# case 15: skipped slides on the console
# --------------------------------------------------------------------------
def test_skipped_slides_summarised_on_the_console(tmp_path, caplog):
    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    write_toy_notebook(nbdir / "01_tiling.ipynb", 'out_dir: str = "x"  # output\n',
                       "import pandas as pd\nfrom pathlib import Path\nd = Path(out_dir, '01_tiling')\n"
                       "d.mkdir(parents=True, exist_ok=True)\n"
                       "pd.DataFrame({'image_id': ['A', 'B', 'C', 'D', 'E'], "
                       "'status': ['ok', 'error', 'error', 'ok', 'ok'], 'stage': ['', 'open', 'read', '', ''], "
                       "'error': ['', 'not a slide', 'truncated', '', '']}).to_csv(d / 'slides.tsv', sep='\\t', "
                       "index=False)\n"
                       "pd.DataFrame({'problem': ['slide without expression', 'expression without slide'], "
                       "'count': [1, 40], 'examples': ['E', '...']}).to_csv(d / 'join_report.tsv', sep='\\t', "
                       "index=False)\n")
    write_toy_notebook(nbdir / "08_hti_survival.ipynb", 'out_dir: str = "x"  # output\n',
                       "import pandas as pd\nfrom pathlib import Path\nd = Path(out_dir, '08_hti_survival')\n"
                       "d.mkdir(parents=True, exist_ok=True)\n"
                       "pd.DataFrame({'image_id': ['T1'], 'status': ['ok']}).to_csv(d / 'slides.tsv', sep='\\t', "
                       "index=False)\n")
    prof = _profile(tmp_path / "p.yaml", {"notebooks": {"01_tiling": {}, "08_hti_survival": {}}}, nbdir)
    out = tmp_path / "out"
    with caplog.at_level("INFO"):
        run.run_profile(prof, out)
    lines = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    expected = (f"01_tiling: 2 of 5 slides skipped (B, C), listed with the reason in {out}/01_tiling/slides.tsv "
                f"(status not ok); left out by the slide-RNA join: 1 × slide without expression, listed in "
                f"{out}/01_tiling/join_report.tsv")
    assert lines == [expected]  # nothing for 08, whose slides were all tiled
    caplog.clear()
    with caplog.at_level("INFO"):  # said again when the notebook is skipped as unchanged
        assert _statuses(run.run_profile(prof, out)) == ["skipped", "skipped"]
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [expected]


@pytest.mark.parametrize("old, new, stem", [("tile_sizes_px", "tile_px", "01_tiling"), ("out_px", "input_px", "01_tiling"),
                                            ("plateau_epochs", "lr_patience", "08_hti_survival")])
def test_a_renamed_parameter_is_refused_naming_its_new_name(tmp_path, old, new, stem):
    """One name per quantity: a profile written before the rename is told the new name, not 'typo?'."""
    declared = run.declared_parameters(run.NOTEBOOKS_DIR / f"{stem}.ipynb")
    assert new in declared and old not in declared
    value = ast.literal_eval(str(declared[new]))  # the parameters cell's default
    path = tmp_path / "old.yaml"
    path.write_text(yaml.safe_dump({"notebooks": {stem: {old: value}}}))
    with pytest.raises(run.ProfileError, match=rf"parameter '{old}' of notebook '{stem}' was renamed to '{new}'"):
        run.load_profile(path)
    path.write_text(yaml.safe_dump({"common": {old: value}, "notebooks": {stem: {}}}))
    with pytest.raises(run.ProfileError, match=rf"common parameter '{old}' was renamed to '{new}'"):
        run.load_profile(path)
    path.write_text(yaml.safe_dump({"notebooks": {stem: {new: value}}}))
    assert run.load_profile(path).notebooks[stem] == {new: value}
