"""The runner's live progress: status line, estimate, tqdm bars from the kernel's stderr, noise filter."""
import io
import logging

import nbformat
import pytest

from histo_utils import progress as pg


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def md(src):
    return nbformat.v4.new_markdown_cell(src)


def code(src):
    return nbformat.v4.new_code_cell(src)


def test_heading_of_takes_the_last_heading_and_ignores_plain_text():
    assert pg.heading_of("# 02 · Training\nSome text\n## Training the network\nmore") == "Training the network"
    assert pg.heading_of("Just a reading, 5 # signs inside a line") is None
    assert pg.heading_of("### Planted truth ###") == "Planted truth"


def test_last_bar_keeps_the_latest_redraw_only():
    chunk = ("\rslides:  20%|██        | 1/5 [00:00<00:01,  3.33it/s]"
             "\rslides:  40%|████      | 2/5 [00:00<00:00,  3.33it/s]")
    assert pg.last_bar(chunk) == "slides:  40%|████      | 2/5 [00:00<00:00,  3.33it/s]"
    assert pg.last_bar("epoch 3 [00:12, 1.2s/it]\n") == "epoch 3 [00:12, 1.2s/it]"
    # warnings and plain messages are not bars
    assert pg.last_bar("/x.py:3: UserWarning: something odd\n  warnings.warn(msg)\n") is None
    assert pg.last_bar("") is None


def test_last_log_line_takes_the_notebooks_logging_lines():
    text = ("INFO histo_utils.training: epoch 2: train loss 0.845 acc 0.590\n"
            "INFO histo_utils.training: epoch 3: train loss 0.684 acc 0.693 (best)\n")
    assert pg.last_log_line(text) == "histo_utils.training: epoch 3: train loss 0.684 acc 0.693 (best)"
    assert pg.last_log_line("/x.py:3: UserWarning: odd\n") is None
    p = pg.NotebookProgress("02_training", 3, live=False, clock=Clock())
    p.write(text)
    assert p.bar.endswith("(best)")


def test_format_seconds():
    assert pg.format_seconds(0) == "0:00"
    assert pg.format_seconds(59.6) == "1:00"
    assert pg.format_seconds(766) == "12:46"
    assert pg.format_seconds(3725) == "1:02:05"
    assert pg.format_seconds(None) == "?"


def test_estimate_prefers_the_previous_cells_and_falls_back_to_the_total():
    prev = [1.0, 2.0, 30.0, 5.0]
    # in cell 2 for 10 s: 20 s of it left, then 5 s
    assert pg.estimate_remaining(13.0, 2, 10.0, previous_cells=prev, previous_seconds=38.0) == pytest.approx(25.0)
    # the cell already took longer than last time: only the later cells are left
    assert pg.estimate_remaining(50.0, 2, 40.0, previous_cells=prev) == pytest.approx(5.0)
    # a notebook with more cells than last time: the total
    assert pg.estimate_remaining(13.0, 7, 1.0, previous_cells=prev, previous_seconds=38.0) == pytest.approx(25.0)
    assert pg.estimate_remaining(50.0, 1, 1.0, previous_seconds=38.0) == 0.0
    assert pg.estimate_remaining(5.0, 1, 1.0) is None


def test_format_status_names_cell_section_times_and_bar_and_fits_the_width():
    s = pg.format_status("02_training", cell=8, n_cells=21, section="Training", elapsed=192, remaining=573,
                         bar="epochs:  50%|█████     | 4/8")
    assert s == "02_training  cell 9/21  § Training  3:12 elapsed, ~9:33 left  | epochs:  50%|█████     | 4/8"
    first = pg.format_status("00_synthetic_cohort", cell=2, n_cells=10, section=None, elapsed=5, remaining=None)
    assert "first run" in first and "§" not in first
    late = pg.format_status("02_training", cell=8, n_cells=21, section=None, elapsed=90, remaining=0.0)
    assert late.endswith("1:30 elapsed, longer than the previous run")
    cut = pg.format_status("02_training", cell=8, n_cells=21, section="x" * 200, elapsed=1, remaining=1, width=60)
    assert len(cut) == 60 and cut.endswith("…")


def test_notebook_progress_follows_sections_cells_and_bars_in_log_mode(caplog):
    clock = Clock()
    p = pg.NotebookProgress("02_training", 6, previous_cells=[0.0, 0.0, 0.0, 100.0, 0.0, 20.0],
                            live=False, heartbeat=30.0, clock=clock)
    cells = [md("# 02 · Training"), code("seed = 0"), md("## Training the network\ntext"),
             code("train()"), md("## Features"), code("features()")]
    with caplog.at_level(logging.INFO, logger="histo_utils.run"):
        for i in range(3):
            p.on_cell_start(cells[i], i)
        p.on_cell_executed(cells[1], 1)
        p.on_cell_start(cells[3], 3)
        clock.t += 10
        for k in range(1, 40):  # many bar updates within one section: no line each
            p.write(f"\repochs:  {k}%|█ | {k}/100 [00:{k:02d}<00:10, 1.0it/s]")
        clock.t += 31  # heartbeat: one more line with the latest bar
        p.write("\repochs:  40%|████ | 40/100 [00:41<01:00, 1.0it/s]")
        p.on_cell_executed(cells[3], 3)
        p.on_cell_start(cells[4], 4)
        p.on_cell_start(cells[5], 5)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 4, lines  # section 1, section 2, heartbeat, section 3
    assert "§ 02 · Training" in lines[0]
    assert "cell 4/6  § Training the network  0:00 elapsed, ~2:00 left" in lines[1]
    assert "0:41 elapsed, ~1:19 left" in lines[2] and "40/100" in lines[2]
    assert "§ Features" in lines[3] and "~0:20 left" in lines[3]
    assert p.close() == [0.0, 0.0, 0.0, 41.0]


def test_notebook_progress_redraws_one_terminal_line_and_clears_it():
    clock = Clock()
    out = io.StringIO()
    p = pg.NotebookProgress("01_tiling", 3, live=True, stream=out, clock=clock)
    p.on_cell_start(md("## Tiling"), 0)
    p.on_cell_start(code("tile()"), 1)
    for k in range(10):  # ten updates in the same instant: drawn once (at most 4 redraws a second)
        p.write(f"\rslides: {k}/10 [00:0{k}<00:10]")
    clock.t += 1
    p.write("\rslides: 10/10 [00:10<00:00]")
    p.close()
    text = out.getvalue()
    assert "\n" not in text
    assert text.count("\r\x1b[K") == 3  # first draw, redraw after a second, clearing at close
    assert "§ Tiling" in text and "slides: 10/10" in text and text.endswith("\r\x1b[K")


def test_quiet_papermill_drops_the_per_notebook_lines_only():
    f = pg.QuietPapermill()

    def rec(msg, level=logging.INFO, name="papermill"):
        return logging.LogRecord(name, level, __file__, 1, msg, None, None)

    for noise in ["Input Notebook:  /x/00.ipynb", "Output Notebook: /r/00.ipynb", "Working directory: /x",
                  "Executing notebook with kernel: python3"]:
        assert not f.filter(rec(noise))
    assert f.filter(rec("Passed unknown parameter: x", logging.WARNING))
    assert f.filter(rec("02_training: done in 3.0 s", name="histo_utils.run"))
    assert f.filter(rec("Input Notebook: a real error", logging.ERROR))


def test_use_text_bars_swaps_the_auto_bars_for_text(monkeypatch):
    import tqdm.asyncio
    import tqdm.auto
    import tqdm.autonotebook

    for mod in (tqdm.auto, tqdm.autonotebook):
        monkeypatch.setattr(mod, "tqdm", mod.tqdm)
        monkeypatch.setattr(mod, "trange", mod.trange)
    pg.use_text_bars()
    assert tqdm.auto.tqdm is tqdm.asyncio.tqdm and tqdm.autonotebook.trange is tqdm.asyncio.trange
    buf = io.StringIO()
    list(tqdm.auto.tqdm(range(3), file=buf, desc="slides"))
    assert pg.last_bar(buf.getvalue()).startswith("slides: 100%")


def test_runner_shows_sections_and_bars_records_cell_times_and_drops_the_noise(tmp_path, monkeypatch, caplog):
    """A real papermill run through the runner's CLI: what reaches the log, and the stamp's cell times."""
    import json

    from histo_utils import run

    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    params = code('out_dir: str = "x"  # output\nn: int = 3  # loop length\n')
    params.metadata["tags"] = ["parameters"]
    body = code("from pathlib import Path\nfrom tqdm.auto import tqdm\nimport time\n"
                "for i in tqdm(range(n), desc='slides', mininterval=0):\n    time.sleep(0.05)\n"
                "(Path(out_dir) / '00_loop').mkdir(parents=True, exist_ok=True)\n")
    nb = nbformat.v4.new_notebook(cells=[md("# 00 · Loop"), params, md("## Looping over slides"), body],
                                  metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                           "language": "python"}})
    nbformat.write(nb, str(nbdir / "00_loop.ipynb"))
    monkeypatch.setattr(run, "NOTEBOOKS_DIR", nbdir)
    prof = tmp_path / "p.yaml"
    prof.write_text("notebooks:\n  00_loop: {n: 4}\n")
    with caplog.at_level(logging.INFO):
        assert run.main(["--params", str(prof), "--out", str(tmp_path / "out"), "--no-report"]) == 0
    text = caplog.text
    assert "Input Notebook" not in text and "Output Notebook" not in text and "Working directory" not in text
    assert "00_loop  cell 5/5  § Looping over slides" in text and "first run" in text
    stamp = json.loads((tmp_path / "out" / ".runner" / "00_loop.json").read_text())
    assert len(stamp["cell_seconds"]) == 5 and stamp["cell_seconds"][4] >= 0.2
    # the executed copy holds text bars, not the 'IProgress not found' warning
    executed = nbformat.read(str(tmp_path / "out" / "notebooks" / "00_loop.ipynb"), as_version=4)
    outs = "".join(o.get("text", "") for c in executed.cells if c.cell_type == "code" for o in c.outputs)
    assert "slides: 100%" in outs and "IProgress" not in outs
    # the second run has an estimate from the first one's stamp
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert run.main(["--params", str(prof), "--out", str(tmp_path / "out"), "--no-report", "--force"]) == 0
    assert "first run" not in caplog.text
    assert "left" in caplog.text or "longer than the previous run" in caplog.text
