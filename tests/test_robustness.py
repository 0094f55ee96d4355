"""The robustness study across seeds (histo_utils.robustness): headlines, their summary, the seed loop, the text."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from histo_utils import io, products, robustness, run
from histo_utils.errors import InputError

NB02, NB03, NB06, NB07, NB08, NB09 = robustness.EXTRACTORS


def _write_run(out: Path, *, seed: int = 0, shift: float = 0.0) -> Path:
    """Hand-made tables of a run folder, as notebooks 02-09 write them (only the columns the study reads)."""
    io.write_table(pd.DataFrame({
        "level": ["tile", "slide", "tile", "slide"], "split": ["test", "test", "validation", "test"],
        "class": ["(all)", "(all)", "(all)", "Liver"], "accuracy": [0.9 + shift, 0.95, 0.1, 0.2],
        "arch": ["compact_bn"] * 4}), products.outputs(out, NB02).accuracy)
    io.write_table(pd.DataFrame({"method": ["pooled scan (Badea)"], "recall": [0.6 + shift], "precision": [1.0]}),
                   products.outputs(out, NB03).recovery_summary)
    feat = pd.DataFrame({"list": ["trained_256px/12_3"] * 3, "why": ["tracks program_lumen_size"] * 3,
                         "term": ["PLANTED_PROGRAM_LUMEN_SIZE", "DECOY_1", "PLANTED_TISSUE_X"],
                         "rank": [3, 1, 2], "nes": [1.5, 1.9, 1.7], "fdr": [0.0, 0.0, 0.0]})
    conf = pd.DataFrame({"list": ["RIN", "RIN"], "term": ["PLANTED_RIN", "DECOY_2"], "rank": [1, 2],
                         "nes": [2.0, 0.3], "fdr": [0.0, 0.9]})
    io.write_table(feat, products.outputs(out, NB06).gsea_features)
    io.write_table(conf, products.outputs(out, NB06).gsea_confounders)
    io.write_table(pd.DataFrame({"program": ["lumen_size"], "rank_among_random": [1], "n_random": [20],
                                 "tracker_auroc": [0.6]}), products.outputs(out, NB07).localisation_rank)
    d08 = products.outputs(out, NB08)
    io.write_table(pd.DataFrame({"set": ["test + OOD slides", "test + OOD slides", "training/validation slides"],
                                 "hti": ["hti0", "hti_smooth", "hti0"], "pearson": [0.85 - shift, 0.7, 0.1],
                                 "ci_coverage": [0.9, np.nan, 0.1]}), d08.hti_agreement)
    io.write_table(pd.DataFrame({"fit": ["estimated HTI", "estimated HTI", "true HTI (oracle)"],
                                 "covariate": ["HTI", "age_decades", "HTI"], "coef": [1.5, 0.3, 3.1],
                                 "coef lower 95%": [0.5, 0.1, 2.1], "coef upper 95%": [2.5, 0.5, 4.1],
                                 "planted_coef": [2.0, 0.2, 2.0]}), d08.cox)
    io.write_table(pd.DataFrame({"comparison": ["HTI > 0.5 vs <= 0.5"], "p": [0.01]}), d08.logrank)
    io.write_table(pd.DataFrame({"trait": ["MKI67"], "test_runs_mean": [0.95]}), d08.table1)
    io.write_table(pd.DataFrame({"trait": ["MKI67", "MKI67"], "set": ["all tiles", "test + OOD slides"],
                                 "tile_auc": [0.99, 0.8]}), d08.tile_accuracy)
    d09 = products.outputs(out, NB09)
    io.write_table(pd.DataFrame({"trait": ["lumen_size_feature"], "planted_set": ["PLANTED_PROGRAM_LUMEN_SIZE"],
                                 "rank": [2], "n_sets": [28]}), d09.masking_truth)
    io.write_table(pd.DataFrame({"trait": ["lumen_size_feature"] * 6, "model": ["nn", "nn", "rf", "rf", "gbt", "gbt"],
                                 "fold": [0, 1, 0, 1, 0, 1], "auc": [0.9, 0.8, 0.86, 0.86, 0.7, 0.7]}), d09.fold_auc)
    (out / ".runner").mkdir(parents=True, exist_ok=True)
    (out / ".runner" / "00_synthetic_cohort.json").write_text(json.dumps({"parameters": {"seed": seed}}))
    return out


def _value(table: pd.DataFrame, headline: str) -> float:
    hit = table[table.headline == headline]
    assert len(hit) == 1, f"{headline!r} in {list(table.headline)}"
    return hit.value.item()


# ------------------------------------------------------------------------------------------------ extraction
def test_headlines_read_from_hand_made_tables(tmp_path):
    h = robustness.run_headlines(_write_run(tmp_path))
    assert list(h.notebook.unique()) == list(robustness.EXTRACTORS)
    # 02: test split, class (all), per level; not validation, not a class
    assert _value(h, "test tile accuracy, compact_bn") == 0.9 and _value(h, "test slide accuracy, compact_bn") == 0.95
    assert _value(h, "planted recall, pooled scan (Badea)") == 0.6
    # 06: named by the table (the tracking channel differs between seeds), rank 3 behind one decoy
    assert _value(h, "rank of PLANTED_PROGRAM_LUMEN_SIZE, trained_256px") == 3
    assert _value(h, "decoys above PLANTED_PROGRAM_LUMEN_SIZE, trained_256px") == 1
    assert _value(h, "rank of PLANTED_RIN, confounder RIN") == 1
    assert not h.headline.str.contains("12_3").any()
    assert _value(h, "tracker rank among random channels, lumen_size") == 1
    # 08: held-out set only; an absent column (ci_width) left out, an empty value kept as NaN (it never holds)
    assert _value(h, "HTI r, hti0") == 0.85 and _value(h, "HTI interval coverage, hti0") == 0.9
    assert np.isnan(_value(h, "HTI interval coverage, hti_smooth"))
    assert not h.headline.str.contains("interval width|training").any()
    assert _value(h, "Cox 95 % CI covers the planted 2, estimated HTI") == 1.0
    assert _value(h, "Cox 95 % CI covers the planted 2, true HTI (oracle)") == 0.0  # 2.1-4.1 misses 2
    assert not h.headline.str.contains("age_decades").any()
    assert _value(h, "tile AUC, MKI67") == 0.8  # the test + OOD row, not all tiles
    # 09: mean over folds; nn 0.85 beats gbt 0.7 but not rf 0.86: it does not beat every baseline
    assert _value(h, "mean AUC nn, lumen_size_feature") == pytest.approx(0.85)
    assert _value(h, "nn beats every baseline, lumen_size_feature") == 0.0
    goals = h.set_index("headline")
    assert goals.loc["HTI r, hti0", "goal"] == "≥ 0.8"
    assert goals.loc["log-rank p, HTI > 0.5 vs <= 0.5", "direction"] == "<"
    assert goals.loc["test tile accuracy, compact_bn", "goal"] == ""


def test_a_notebook_without_tables_is_skipped_not_fatal(tmp_path, caplog):
    run_dir = _write_run(tmp_path)
    products.outputs(run_dir, NB07).localisation_rank.unlink()
    h = robustness.run_headlines(run_dir)
    assert NB07 not in set(h.notebook) and NB08 in set(h.notebook)
    assert "no headlines of 07_visualization" in caplog.text


@pytest.mark.slow
def test_headlines_of_the_tiny_run(tiny_profile_run):
    """The real tables have what the extractors read: every seed-dependent notebook gives its headlines."""
    out, _, _ = tiny_profile_run
    h = robustness.run_headlines(out)
    assert set(h.notebook) == set(robustness.EXTRACTORS)
    acc = io.read_table(products.outputs(out, NB02).accuracy).query("split == 'test' and `class` == '(all)'")
    for r in acc.itertuples():
        assert _value(h, f"test {r.level} accuracy, {r.arch}") == r.accuracy
    for start in ("planted recall, ", "rank of PLANTED_", "tracker rank among random channels, ", "HTI r, hti0",
                  "Cox 95 % CI covers the planted 2, ", "log-rank p, ", "masking rank of PLANTED_PROGRAM",
                  "nn beats every baseline, "):
        assert h.headline.str.startswith(start).any(), start
    assert not h.headline.str.contains("/").any() and h.headline.is_unique


# ------------------------------------------------------------------------------------------------ summary
def _long(values: dict[int, float], *, goal: robustness.Goal | None = robustness.Goal(">=", 0.8)) -> pd.DataFrame:
    rows = [{"seed": s, "notebook": NB08, "headline": "HTI r, hti0", "value": v, "goal": goal.text if goal else "",
             "threshold": goal.threshold if goal else np.nan, "direction": goal.direction if goal else "",
             "holds": goal.holds(v) if goal else pd.NA} for s, v in values.items()]
    return pd.DataFrame(rows).astype({"holds": "boolean"})


def test_a_headline_holding_in_two_of_three_seeds_does_not_hold_in_every_seed():
    s = robustness.summarise(_long({0: 0.85, 1: 0.9, 2: 0.7})).iloc[0]
    assert (s.n_seeds, s.n_runs, s.n_holds, bool(s.holds_every_seed)) == (3, 3, 2, False)
    assert (s["min"], s["max"]) == (0.7, 0.9) and s.sd == pytest.approx(np.std([0.85, 0.9, 0.7], ddof=1))
    every = robustness.summarise(_long({0: 0.85, 1: 0.9, 2: 0.8})).iloc[0]
    assert every.n_holds == 3 and bool(every.holds_every_seed)


def test_a_seed_without_the_headline_counts_as_not_holding():
    s = robustness.summarise(_long({0: 0.85, 2: 0.9}), seeds=[0, 1, 2]).iloc[0]
    assert (s.n_seeds, s.n_runs, s.n_holds, bool(s.holds_every_seed)) == (2, 3, 2, False)


def test_a_headline_without_a_goal_has_its_spread_only():
    s = robustness.summarise(_long({0: 0.5, 1: 0.6}, goal=None)).iloc[0]
    assert pd.isna(s.n_holds) and pd.isna(s.holds_every_seed) and (s["min"], s["max"]) == (0.5, 0.6)


def test_goals_hold_by_their_direction():
    assert robustness.Goal("<", 0.05).holds(0.01) and not robustness.Goal("<", 0.05).holds(0.05)
    assert robustness.Goal("<=", 1).holds(1) and not robustness.Goal("<=", 1).holds(2)
    assert not robustness.Goal(">=", 0.8).holds(float("nan"))
    with pytest.raises(InputError):
        robustness.Goal("=>", 1)


# ------------------------------------------------------------------------------------------------ the seed loop
@pytest.fixture
def fake_runner(monkeypatch):
    """The runner replaced: each call records the seed its profile gives and writes hand-made tables."""
    calls = []

    def run_profile(prof, out, **kwargs):
        seed = prof.common["seed"]
        calls.append((seed, Path(out)))
        _write_run(Path(out), seed=seed, shift=0.1 * seed)
        return [{"notebook": NB08, "status": "ran", "seconds": 1.0}]

    monkeypatch.setattr(run, "run_profile", run_profile)
    return calls


def test_each_seed_runs_with_its_seed_and_a_reused_folder_is_not_run(tmp_path, fake_runner):
    reused = _write_run(tmp_path / "made_by_make_figures", seed=0)
    out, pub = tmp_path / "study", tmp_path / "published"
    argv = ["--profile", "tiny", "--seeds", "0", "1", "2", "--reuse", f"0={reused}", "--out", str(out),
            "--publish", str(pub)]
    assert robustness.main(argv) == 0
    assert fake_runner == [(1, out / "seed_1"), (2, out / "seed_2")]
    derived = yaml.safe_load((out / "seed_2" / "tiny_seed2.yaml").read_text())
    assert derived["common"]["seed"] == 2 and derived["notebooks"] == run.read_profile_yaml(
        run.PARAMS_DIR / "tiny.yaml")["notebooks"]
    long = io.read_table(products.outputs(out, "robustness").headlines)
    assert sorted(long.seed.unique()) == [0, 1, 2]
    summary = io.read_table(pub / "robustness" / "summary.csv").set_index("headline")
    assert sorted(p.name for p in (pub / "robustness").iterdir()) == ["headlines.csv", "headlines.png", "summary.csv"]
    # HTI r = 0.85, 0.75, 0.65 over seeds 0, 1, 2: holds in seed 0 only
    r = summary.loc["HTI r, hti0"]
    assert (r.n_runs, r.n_holds, r.holds_every_seed) == (3, 1, False)
    assert (r["min"], r["max"]) == pytest.approx((0.65, 0.85))
    # a rerun resumes: the derived profile is not rewritten, the runner is called again (and skips, really)
    before = (out / "seed_1" / "tiny_seed1.yaml").stat().st_mtime_ns
    assert robustness.main(argv[:-2]) == 0
    assert (out / "seed_1" / "tiny_seed1.yaml").stat().st_mtime_ns == before


def test_a_failed_seed_is_reported_and_nothing_published(tmp_path, monkeypatch):
    def run_profile(prof, out, **kwargs):
        if prof.common["seed"] == 1:
            raise run.NotebookFailed("Notebook '08_hti_survival' failed in cell 3 (ValueError: x).")
        _write_run(Path(out), seed=prof.common["seed"])
        return []

    monkeypatch.setattr(run, "run_profile", run_profile)
    pub = tmp_path / "published"
    assert robustness.main(["--profile", "tiny", "--seeds", "0", "1", "--out", str(tmp_path / "s"),
                            "--publish", str(pub)]) == 2
    assert not pub.exists()
    summary = io.read_table(products.outputs(tmp_path / "s", "robustness").summary)
    assert (summary.n_runs == 2).all() and not summary.holds_every_seed.eq(True).any()


def test_a_reused_folder_of_another_seed_is_refused(tmp_path, fake_runner):
    reused = _write_run(tmp_path / "seed0_run", seed=0)
    with pytest.raises(robustness.ReusedRunMismatch, match="ran with seed 0, not 1"):
        robustness.check_reused(reused, 1)
    assert robustness.main(["--profile", "tiny", "--seeds", "0", "1", "--reuse", f"1={reused}",
                            "--out", str(tmp_path / "s")]) == 2
    assert fake_runner == [(0, tmp_path / "s" / "seed_0")]  # refused before seed 1's tables were read
    with pytest.raises(InputError, match="SEED=DIR"):
        robustness.parse_reuse(["runs/default"])


# ------------------------------------------------------------------------------------------------ atomic writes
def test_tables_and_the_published_folder_are_replaced_whole_or_not_at_all(tmp_path, monkeypatch):
    h = robustness.seed_headlines({0: _write_run(tmp_path / "r0")})
    out = tmp_path / "study"
    robustness.write_study(h, robustness.summarise(h), out)
    published = robustness.publish_study(out, tmp_path / "pub")
    summary = products.outputs(out, "robustness").summary
    before, before_pub = summary.read_bytes(), (published / "summary.csv").read_bytes()

    def broken(self, path, *args, **kwargs):
        Path(path).write_text("half a tab")
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_csv", broken)
    with pytest.raises(OSError, match="disk full"):
        robustness.write_study(h.assign(value=0.0), robustness.summarise(h), out)
    assert summary.read_bytes() == before
    assert not [p for p in summary.parent.iterdir() if p.name.startswith(".")]
    monkeypatch.undo()
    summary.unlink()  # publishing now fails half-way: the published folder stays as it was
    with pytest.raises(FileNotFoundError):
        robustness.publish_study(out, tmp_path / "pub")
    assert (published / "summary.csv").read_bytes() == before_pub
    assert sorted(p.name for p in (tmp_path / "pub").iterdir()) == ["robustness"]


# ------------------------------------------------------------------------------------------------ the Reading text
def _summary_file(path: Path, n_holds: int, *, headline: str = "HTI r, hti0") -> Path:
    s = robustness.summarise(_long({0: 0.85, 1: 0.9, 2: 0.7 if n_holds == 2 else 0.81}))
    io.write_table(s.assign(headline=headline), path)
    return path


def test_across_seeds_follows_the_summary(tmp_path):
    path = tmp_path / "summary.csv"
    assert "No robustness run across seeds is published" in robustness.across_seeds(NB08, summary=path)
    every = robustness.across_seeds(NB08, summary=_summary_file(path, 3))
    assert every == ("**Across 3 seeds** (the published robustness study of the default profile, `make robustness`): "
                     "HTI r, hti0: 0.81–0.9 over 3 seeds, holds in every seed (goal ≥ 0.8).")
    two = robustness.across_seeds(NB08, summary=_summary_file(path, 2))
    assert "0.7–0.9 over 3 seeds, holds in 2 of 3 seeds (goal ≥ 0.8)" in two
    none = robustness.across_seeds(NB02, summary=path)
    assert none == "The robustness run across seeds has no headline of 02_training."
    hostile = robustness.across_seeds(NB08, summary=_summary_file(path, 3, headline="<img src=x onerror=1>"))
    assert "<img" not in hostile and "&lt;img" in hostile


def test_the_figure_has_a_panel_per_headline_with_a_point_per_seed_and_the_goal_as_a_line(tmp_path):
    from histo_utils.figures.robustness import headline_panels

    h = robustness.seed_headlines({0: _write_run(tmp_path / "r0"), 1: _write_run(tmp_path / "r1", shift=0.1)})
    fig = headline_panels(h)
    panels = [ax for ax in fig.axes if ax.axison]
    assert len(panels) == h.headline.nunique()
    r = next(ax for ax in panels if ax.get_title().replace("\n", " ").endswith("HTI r, hti0"))
    assert len(r.collections[0].get_offsets()) == 2  # seeds 0 and 1
    assert [line.get_ydata()[0] for line in r.get_lines()] == [0.8]  # the goal


def test_across_seeds_does_not_apply_the_synthetic_study_to_a_real_cohort(tmp_path):
    path = _summary_file(tmp_path / "summary.csv", 3)
    assert "HTI r" in robustness.across_seeds(NB08, summary=path)
    real = robustness.across_seeds(NB08, planted=False, summary=path)
    assert "does not apply to this cohort" in real and "HTI r" not in real
