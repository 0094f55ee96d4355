"""Compute, then plot (issue 29): the method modules compute, ``histo_utils.figures`` only draws.

Three kinds of tests:

* the compute functions give the numbers of the former ``plot_*`` path (section "old path"; these tests go
  when stage B deletes the old ``plot_*`` functions, see ``OLD_TO_NEW``);
* every drawing function runs from a compute result and returns its figure (and table);
* the layering: the six method modules import no drawing library, the figures no computing library.
"""
import ast
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

import histo_utils  # noqa: E402
from histo_utils import (enrichment, figures, hti, metrics, models, radiogenomics, survival,  # noqa: E402
                         trait_models, visualization)

PACKAGE = Path(histo_utils.__file__).parent
METHOD_MODULES = ("survival", "trait_models", "enrichment", "hti", "visualization", "radiogenomics")

#: every drawing function of the six method modules -> (compute function or None, its figure in ``figures``)
OLD_TO_NEW = {
    "survival.plot_logrank": ("survival.logrank_comparisons", "km_panel"),
    "survival.plot_logrank_panels": ("survival.logrank_comparisons", "logrank_panels"),
    "survival.plot_bulk_survival": ("survival.bulk_survival", "bulk_survival"),
    "survival.plot_hti_by_subtype": ("survival.hti_by_subtype", "hti_by_subtype"),
    "survival.plot_cox": (None, "cox_hazard_ratios"),
    "trait_models.plot_training_curves": (None, "trait_training_curves"),
    "trait_models.plot_table1": (None, "table1_auc"),
    "trait_models.plot_score_distributions": (None, "score_distributions"),
    "enrichment.plot_association_counts": (None, "association_counts"),
    "enrichment.plot_enrichment_curves": (None, "enrichment_curves"),
    "enrichment.plot_heatmap": (None, "annotated_heatmap"),
    "enrichment.plot_planted_vs_decoys": (None, "planted_vs_decoys"),
    "hti.plot_planted_clones": ("hti.planted_clones", "planted_clones"),
    "hti.plot_cartographies": ("hti.cartography_examples", "cartographies"),
    "hti.plot_hti_vs_truth": ("hti.hti_vs_truth", "hti_vs_truth"),
    "hti.combination_cmap": (None, "combination_cmap"),
    "visualization.plot_feature_panels": ("visualization.feature_panel_maps", "feature_panels"),
    "visualization.plot_linked_view": ("visualization.linked_view_maps", "linked_view"),
    "visualization.plot_localisation": ("visualization.channel_scores", "localisation"),
    "visualization.plot_program_panels": ("visualization.program_panel_maps", "program_panels"),
    "radiogenomics.plot_model_comparison": (None, "model_comparison"),
    "radiogenomics.plot_training_loss": (None, "training_loss"),
    "radiogenomics.plot_gene_masking": (None, "gene_masking"),
    "radiogenomics.plot_saliency_heatmap": (None, "saliency_heatmap"),
}

#: the names of the former histo_utils/figures.py (notebooks 00-05), still ``figures.<name>``
FIGURES_00_05 = ["shared_vs_null_dots", "excess_by_layer", "excess_strips", "pc_cross_heatmaps",
                 "correlation_histogram", "count_heatmaps", "stacked_layer_bars", "reproducibility_scatter",
                 "training_curves", "confusion_heatmaps", "variance_bars", "confounder_diagnostics", "residual_grid",
                 "bars_by_tissue", "technical_scatter", "planted_scatter_and_roles", "tiles_and_slides_per_tissue",
                 "resolution_overview", "confounder_overview", "fading_scatter", "expression_floor_histogram",
                 "within_tissue_power", "layer_tracking_lines", "network_comparison_bars"]


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _resolve(dotted):
    mod, name = dotted.split(".")
    return getattr({"survival": survival, "trait_models": trait_models, "enrichment": enrichment, "hti": hti,
                    "visualization": visualization, "radiogenomics": radiogenomics}[mod], name)


def _titles(fig):
    return [ax.get_title() for ax in fig.axes]


def _images(fig):
    return [np.asarray(im.get_array()) for ax in fig.axes for im in ax.get_images()]


def _same_drawing(old, new):
    """Same panel titles and the same images (arrays) in the same axes."""
    assert _titles(old) == _titles(new)
    a, b = _images(old), _images(new)
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


# --------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------
def _surv(n=120, seed=0):
    rng = np.random.default_rng(seed)
    h = rng.uniform(0, 1, n)
    t = rng.exponential(10 / np.exp(1.5 * h))
    c = rng.exponential(20, n)
    a = rng.normal(size=n)
    return pd.DataFrame({"hti0": h, "hti_corrected": np.clip(h + rng.normal(0, 0.1, n), 0, 1), "true_hti0": h,
                         "months": np.minimum(t, c), "OS": (t <= c).astype(int),
                         "A:value": a, "A:label": (a > np.median(a)).astype(int),
                         "B:value": h + rng.normal(0, 0.3, n), "B:label": (h > 0.5).astype(int),
                         "subtype": rng.choice(["LumA", "LumB", "Basal", None], n)},
                        index=pd.Index([f"s{i}" for i in range(n)], name="image_id"))


def _slide_table():
    ids = [f"TCGA-SY-{i:04d}-01Z-00-DX1" for i in range(8)]
    true = np.array([0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 0.5, np.nan])
    table = pd.DataFrame({"true_hti": true, "hti": true + 0.05, "hti0": true + 0.05, "hti_low": true,
                          "hti_high": true + 0.1, "hti_corrected": true, "hti_corrected_low": true,
                          "hti_corrected_high": true, "tile_truth_hti": true},
                         index=pd.Index(ids, name="image_id"))
    table.loc[ids[2], ["hti_low", "hti_high"]] = [0.5, 0.6]
    sets = pd.Series(["test", "OOD", "OOD", "train", "validation", np.nan, "test", "unused"], index=ids)
    return table, sets


def _tiles_and_calls(ids, rng):
    rows = [{"image_id": iid, "x": 100 * c, "y": 100 * r, "size0": 100} for iid in ids for r in range(3)
            for c in range(4)]
    tiles = pd.DataFrame(rows)
    calls = pd.DataFrame(rng.integers(0, 2, (len(tiles), 2)), columns=["A", "B"])
    return tiles, calls


class _Tiles:
    """A tile dataset as notebook 07 uses it: ``ds[i] = (image, label, i)``, ``ds.read_rgb(i)``."""

    def __init__(self, n=6, size=32, seed=0):
        self.x = torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], 0, i

    def read_rgb(self, i):
        return visualization.denormalize(self.x[i])


class _Structures:
    """Planted structures under a tile (as :class:`histo_utils.truth.PlantedStructures`)."""

    def __call__(self, row):
        m = np.zeros((32, 32), bool)
        m[: int(row.x) % 32 + 4] = True
        return {"nuclei": m, "lumen": ~m}

    @staticmethod
    def structure_of(role):
        return "lumen" if role.startswith("program_") else "nuclei"


def _network():
    torch.manual_seed(0)
    model = models.build_model("compact", 3).eval()
    return model, models.feature_layers(model, "compact")


def _synth(features):
    rng = np.random.default_rng(1)
    return {f: visualization.Synthesis(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8),
                                       np.array([0.1 * i, 0.5 + i]), "noise") for i, f in enumerate(features)}


def _reps(tiles_idx, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"image_id": ["slideA"] * (len(tiles_idx) - 1) + ["slideB"],
                         "subject_id": [f"d{i}" for i in range(len(tiles_idx))], "tissue": "Liver",
                         "x": rng.integers(0, 5000, len(tiles_idx)), "y": rng.integers(0, 5000, len(tiles_idx)),
                         "size0": 256, "value": rng.normal(size=len(tiles_idx))}, index=tiles_idx)


def _tumour_truth(tmp_path, traits=("A", "B")):
    """A tiny synthetic tumour ``truth/`` folder: clones.tsv, clone_maps/*.png, slides.tsv-like table."""
    rng = np.random.default_rng(0)
    (tmp_path / "clone_maps").mkdir()
    rows, truth = [], []
    for i in range(7):
        iid = f"TCGA-SY-{i:04d}-01Z-00-DX1"
        n_clones = 1 + i % 3
        lab = (np.arange(20)[None, :] * n_clones // 20).repeat(12, 0)
        Image.fromarray((lab + 1).astype(np.uint8)).save(tmp_path / "clone_maps" / f"{iid}.png")
        rows += [{"image_id": iid, "clone": c, **{f"state_{t}": int(rng.integers(0, 2)) for t in traits}}
                 for c in range(n_clones)]
        truth.append({"image_id": iid, "patient": iid[:12], "dx": 1, "file": f"{iid}.svs", "n_clones": n_clones,
                      "true_hti": np.nan if i == 0 else rng.uniform(0, 1), "planted_log_hazard": rng.normal(),
                      **{f"mix_{t}": rng.uniform() for t in traits}})
    truth.append({**truth[1], "image_id": truth[1]["image_id"][:-1] + "2", "dx": 2})  # a DX2 slide: left out
    pd.DataFrame(rows).to_csv(tmp_path / "clones.tsv", sep="\t", index=False)
    truth = pd.DataFrame(truth).set_index("image_id")
    patients = truth[truth.dx == 1].patient
    values = pd.DataFrame(rng.normal(size=(len(patients), len(traits))), index=patients, columns=list(traits))
    clinical = pd.DataFrame({"OS": rng.integers(0, 2, len(patients)), "OS.time": rng.uniform(100, 3000, len(patients))},
                            index=patients)
    return truth, values, clinical


def _tables_08_06_09():
    """Small tables of the draw-only figures of notebooks 06, 08 and 09."""
    rng = np.random.default_rng(0)
    history = pd.DataFrame([{"trait": t, "split": s, "epoch": e, "val_score": rng.uniform()}
                            for t in ("A", "B") for s in range(2) for e in range(3)])
    tab1 = pd.DataFrame({"trait": ["A", "B"], "test_runs_mean": [0.8, 0.7], "test_runs_min": [0.7, 0.6],
                         "test_runs_max": [0.9, 0.8], "test_ensemble": [0.85, 0.75], "OOD-near_ensemble": [0.6, 0.5],
                         "OOD-all_ensemble": [0.9, 0.8]})
    scores = pd.DataFrame({"set": np.repeat(["test", "OOD-near", "OOD-all"], 8), "trait": np.tile(["A", "B"], 12),
                           "label": np.tile([0, 0, 1, 1], 6), "score": rng.uniform(size=24)})
    counts = pd.DataFrame({"scope": ["pooled", "Liver"], "associations_bh": [5, 2], "table": "t"})
    per_feature = pd.DataFrame({"table": "t", "feature": ["f1", "f2"], "associations": [3, 2]})
    gsea = pd.DataFrame({"list": ["l1", "l2"], "term": ["S1", "S2"], "rank": [1, 1], "nes": [2.0, -1.5],
                         "fdr": [0.01, 0.2]})
    curves = {"l1": {"S1": {"RES": np.linspace(0, 1, 10), "hits": [1, 4]}},
              "l2": {"S2": {"RES": -np.linspace(0, 1, 10), "hits": [2]}}}
    heat = pd.DataFrame(rng.uniform(size=(3, 3)), index=list("abc"), columns=list("xyz"))
    fold_auc = pd.DataFrame([{"trait": t, "model": m, "fold": f, "auc": rng.uniform(0.4, 0.9)}
                             for t in ("a", "b") for m in ("nn", "rf") for f in range(3)])
    boots = pd.DataFrame([{"trait": t, "model": "rf", "resample": r, "difference": rng.normal(0.1, 0.05)}
                          for t in ("a", "b") for r in range(7)])
    masking = pd.DataFrame({"trait": "a", "gene_set": ["PLANTED_X", "DECOY_1"], "auc": [0.8, 0.5],
                            "planted": [True, False]})
    traits = pd.DataFrame({"a": [1, 0, 1]}, index=["s1", "s2", "s3"])
    sal = pd.DataFrame({"trait": "a", "SAMPID": np.repeat(["s1", "s2", "s3"], 2), "term": ["PLANTED_X", "DECOY_1"] * 3,
                        "nes": [2.0, 0.1, -1.0, 0.2, 1.5, 0.0]})
    ae = pd.DataFrame({"epoch": range(4), "loss": [1.0, 0.5, 0.4, 0.3]})
    return dict(history=history, tab1=tab1, scores=scores, counts=counts, per_feature=per_feature, gsea=gsea,
                curves=curves, heat=heat, fold_auc=fold_auc, boots=boots, masking=masking, traits=traits, sal=sal,
                ae=ae)


# --------------------------------------------------------------------------
# the figures draw from compute results
# --------------------------------------------------------------------------
def test_every_drawing_of_the_method_modules_has_its_figure():
    found = set()
    for mod in METHOD_MODULES:
        tree = ast.parse((PACKAGE / f"{mod}.py").read_text())
        found |= {f"{mod}.{n.name}" for n in tree.body if isinstance(n, ast.FunctionDef)
                  and (n.name.startswith("plot_") or n.name in ("combination_cmap",))}
    assert found <= set(OLD_TO_NEW), f"drawings without a figure in histo_utils.figures: {found - set(OLD_TO_NEW)}"
    for old, (compute, new) in OLD_TO_NEW.items():
        assert callable(getattr(figures, new)), new
        if compute is not None:
            assert callable(_resolve(compute))


def test_figures_keep_the_names_of_notebooks_00_05_and_export_every_function():
    assert set(FIGURES_00_05) <= set(figures.__all__)
    assert figures.__all__ == [n for m in figures.SUBMODULES for n in m.__all__]  # every submodule re-exported
    assert len(figures.__all__) == len(set(figures.__all__))
    for name in figures.__all__:
        assert getattr(figures, name) is not None
    for m in figures.SUBMODULES:
        public = {n for n, v in vars(m).items() if callable(v) and not n.startswith("_")
                  and getattr(v, "__module__", "") == m.__name__}
        assert public <= set(m.__all__), f"{m.__name__}: {public - set(m.__all__)} not exported"


def test_survival_figures_from_results():
    surv = _surv(seed=5)
    res = survival.logrank_comparisons(surv, survival.hti_comparisons(surv))
    assert list(res.table.columns) == ["comparison", "p", "statistic", "n_low", "n_high"]
    km = survival.logrank_groups(surv.months, surv.OS, surv.hti0 > 0.5).km[True]
    high = res.curves[(res.curves.comparison == res.table.comparison[0]) & (res.curves.group == "high")]
    np.testing.assert_allclose(high.survival, km.survival_function_.iloc[:, 0])
    assert (high.ci_lower <= high.survival + 1e-12).all() and (high.survival <= high.ci_upper + 1e-12).all()
    fig, ax = plt.subplots()
    figures.km_panel(ax, res.table.iloc[0], res.curves)
    assert ax.get_xlabel() == "months" and ax.get_ylabel() == "survival probability"
    assert ax.get_title().endswith(f"log-rank p = {res.table.p[0]:.3g}")
    bulk = survival.bulk_survival(surv, ["A", "B"])
    assert list(bulk.mann_whitney.trait) == ["A", "B"] and len(bulk.hti) == 2 * len(surv)
    fig, table = figures.bulk_survival(bulk)
    assert len(fig.axes) == 4 and list(table.trait) == ["A", "B"]
    fig, table = figures.bulk_survival(survival.bulk_survival(surv, ["A"]))  # one trait: one column of panels
    assert len(fig.axes) == 2
    sub = survival.hti_by_subtype(surv)
    assert sub.order == ["Basal", "LumA", "LumB"] and 0 <= sub.kruskal_p <= 1
    fig, table, why = figures.hti_by_subtype(sub)
    assert why is None and f"p = {sub.kruskal_p:.2g}" in fig.axes[0].get_title()
    cox = pd.DataFrame({"fit": ["estimated HTI"] * 2 + ["true HTI (oracle)"] * 2, "covariate": ["HTI", "stage"] * 2,
                        "coef": [1.2, 0.3, 1.4, 0.2], "coef lower 95%": [0.5, 0.0, 0.9, -0.1],
                        "coef upper 95%": [1.9, 0.6, 1.9, 0.5], "planted_coef": [1.5, 0.0, 1.5, 0.0]})
    ax = figures.cox_hazard_ratios(cox).axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["HTI", "stage"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["planted", "estimated HTI", "true HTI (oracle)"]


def test_hti_figures_from_results():
    table, sets = _slide_table()
    res = hti.hti_vs_truth(table, sets)
    assert list(res.panels.n) == [4, 4, 3, 3]  # test/OOD/unused with a true HTI; train, validation, no set
    assert list(res.panels.estimator) == ["paper's HTI", "corrected HTI"] * 2
    fig, out = figures.hti_vs_truth(res)
    assert len(fig.axes) == 4 and "n = 3" in fig.axes[3].get_title() and "corrected HTI" in fig.axes[3].get_title()
    with pytest.raises(histo_utils.errors.InputError, match="Unknown slide sets"):
        hti.hti_vs_truth(table, sets.replace("train", "training"))
    assert figures.combination_cmap(2).N == 4 and list(figures.SET_COLOURS) == list(hti.SLIDE_SETS)


def test_reading_of_08_takes_the_subtype_test_of_the_figure():
    from scipy import stats

    surv = _surv(seed=4)
    tab1 = pd.DataFrame({"trait": ["A"], "test_runs_mean": [0.8], "test_runs_min": [0.7], "test_runs_max": [0.9],
                         "test_ensemble": [0.85], "OOD-near_ensemble": [0.6], "OOD-all_ensemble": [0.9]})
    evaluation = pd.DataFrame({"set": ["test"], "model": ["ensemble"], "trait": ["A"], "n_slides": [10],
                               "n_high": [5]})
    lr = survival.logrank_comparisons(surv, survival.hti_comparisons(surv)).table
    bulk = survival.bulk_survival(surv, ["A"]).table
    cox = pd.DataFrame({"fit": ["estimated HTI"], "covariate": ["HTI"], "coef": [1.2], "coef lower 95%": [0.5],
                        "coef upper 95%": [1.9]})
    text = hti.reading(tab1, evaluation, lr, bulk, cox, surv)
    sub = surv[surv.subtype.notna()]
    p = stats.kruskal(*[g.hti0.to_numpy() for _, g in sub.groupby("subtype")]).pvalue  # the former reading's test
    assert f"HTI by subtype: Kruskal–Wallis p = {hti._fmt_p(p)}." in text
    assert "Kruskal" not in hti.reading(tab1, evaluation, lr, bulk, cox, surv.assign(subtype="LumA"))


def test_cartographies_from_result(monkeypatch):
    rng = np.random.default_rng(0)
    ids = [f"TCGA-SY-{i:04d}-01Z-00-DX1" for i in range(5)]
    tiles, calls = _tiles_and_calls(ids, rng)
    slide_table = hti.slide_hti(calls.to_numpy(), tiles.image_id)
    slide_table["hti0"] = slide_table.hti.fillna(0.0)
    true_calls = rng.integers(0, 2, (len(tiles), 2))
    slide_table["true_hti"] = hti.slide_hti(true_calls, tiles.image_id).hti
    monkeypatch.setattr(hti, "read_thumbnail", lambda path, max_px=512: (np.zeros((12, 16, 3), np.uint8), 10.0))
    sets = pd.Series(["test", "OOD", "test", "train", "OOD"], index=ids)
    res = hti.cartography_examples(tiles, calls, slide_table, {i: i for i in ids}, n_slides=3, true_calls=true_calls,
                                   sets=sets)
    assert set(res.slides.set) <= {"test", "OOD"} and list(res.slides.hti0) == sorted(res.slides.hti0)
    assert res.trait_maps[0].shape == (3, 4, 2) and res.combination_maps[0].shape == (3, 4)
    first = tiles[tiles.image_id == res.slides.image_id[0]]
    np.testing.assert_array_equal(res.combination_maps[0].ravel(),
                                  hti.combination_codes(calls.loc[first.index].to_numpy()))
    assert len(res.table) == 3 * 12 and list(res.table.columns[-2:]) == ["A", "B"]
    fig, table = figures.cartographies(res)
    assert table is res.table and len(fig.axes) == 3 * 5 and _titles(fig)[4].startswith("true clones: HTI")
    fig, _ = figures.cartographies(hti.cartography_examples(tiles, calls, slide_table, {i: i for i in ids},
                                                            n_slides=2))
    assert len(fig.axes) == 2 * 4 and "(" not in _titles(fig)[0]  # no true maps, no sets


def test_planted_clones_from_result(tmp_path, monkeypatch):
    truth, values, clinical = _tumour_truth(tmp_path)
    monkeypatch.setattr(hti, "read_thumbnail", lambda path, max_px=512: (np.zeros((24, 40, 3), np.uint8), 10.0))
    res = hti.planted_clones(tmp_path, tmp_path, truth, values, clinical, ["A", "B"], hti_split=0.4)
    assert len(res.table) == len(res.slides) == 7 and list(res.examples.true_hti0) == sorted(res.examples.true_hti0)
    assert all(m.shape == (12, 20) and set(np.unique(m)) <= {0, 1, 2, 3} for m in res.clone_maps)
    np.testing.assert_array_equal(res.slides.bulk_A, values.loc[res.slides.patient, "A"].to_numpy())
    assert list(dict.fromkeys(res.curves.group)) == ["true HTI <= 0.4", "true HTI > 0.4"]
    fig, table = figures.planted_clones(res)
    assert table is res.table and len(fig.axes) == 8 and fig.legends


def test_feature_panels_from_result():
    model, layers = _network()
    ds = _Tiles()
    chosen = pd.DataFrame({"feature": ["3_5", "1_0"], "gene": ["g1", "g2"], "symbol": ["G1", "G2"], "r": [0.6, -0.4]})
    reps = {"3_5": _reps([2, 4], 0), "1_0": _reps([1, 3, 5], 1)}
    res = visualization.feature_panel_maps(model, layers, ds, chosen, reps, _synth(chosen.feature),
                                           structures=_Structures(), gene_roles=pd.Series({"g1": "program_lumen_size"}))
    module, ch = visualization.feature_channel("3_5", layers)
    g = visualization.guided_backprop(model, module, ch, ds[2][0].unsqueeze(0))[0]
    np.testing.assert_array_equal(res.gbp[0], visualization.gbp_rgb(g))
    np.testing.assert_array_equal(res.tiles[1], ds.read_rgb(1))
    assert list(res.table.truth_structure) == ["lumen", "nuclei"] and res.roles == ["program_lumen_size", ""]
    fig, table = figures.feature_panels(res)
    assert table is res.table and len(fig.axes) == 2 * 4
    assert _titles(fig)[3] == "planted truth: lumen\n(gene role: program_lumen_size)"
    fig, _ = figures.feature_panels(visualization.feature_panel_maps(model, layers, ds, chosen, reps,
                                                                     _synth(chosen.feature)))
    assert len(fig.axes) == 2 * 3


def test_linked_view_from_result():
    model, layers = _network()
    ds = _Tiles()
    pairs = pd.DataFrame({"feature": ["3_5", "1_0"], "scan": ["within", "pooled"], "r": [0.7, 0.5]})
    reps = {"3_5": _reps([0, 2, 4], 0), "1_0": _reps([1, 3], 1)}
    thumbs = {"slideA": (np.full((20, 30, 3), 200, np.uint8), 100.0)}
    res = visualization.linked_view_maps(model, layers, ds, "ENSG1", pairs, reps, _synth(["3_5", "1_0", "2_1"]),
                                         thumbs, n_tiles=3, symbol="G1")
    assert list(res.synth) == ["3_5", "1_0"] and len(res.table) == 5 and len(res.gbp["1_0"]) == 2
    module, ch = visualization.feature_channel("1_0", layers)
    g = visualization.guided_backprop(model, module, ch, torch.stack([ds[1][0], ds[3][0]]))
    np.testing.assert_array_equal(res.gbp["1_0"][1], visualization.gbp_rgb(g[1]))
    fig, table = figures.linked_view(res)
    assert table is res.table and len(fig.axes) == 2 * 5 and fig._suptitle.get_text() == "Linked view of G1 (ENSG1)"


def test_program_panels_from_result():
    model, layers = _network()
    ds = _Tiles()
    panels = pd.DataFrame({"program": ["lumen_size", "stroma_fraction"], "structure": ["lumen", "stroma"],
                           "feature": ["3_5", "2_1"], "r_program": [0.5, -0.4], "tile": [1, 4],
                           "image_id": ["slideA", "slideB"], "tissue": "Liver", "x": [256, 512], "y": [0, 256],
                           "value": [1.5, 0.2], "mask_fraction": [0.3, 0.2]})
    masks = {"lumen_size": np.arange(32 * 32).reshape(32, 32) % 7 == 0,
             "stroma_fraction": np.arange(32 * 32).reshape(32, 32) < 300}
    res = visualization.program_panel_maps(model, layers, ds, panels, _synth(panels.feature), masks)
    fmap = visualization.feature_maps(model, layers, ["2_1"], ds[4][0].unsqueeze(0))[0, 0]
    np.testing.assert_array_equal(res.feature_maps[1], fmap)
    a = metrics.auc(fmap.ravel(), masks["stroma_fraction"].ravel())  # where the map fires, not flipped by r < 0
    assert res.table.map_auroc[1] == a and res.table.r_sign.tolist() == [1, -1]
    assert res.table.fires[1] == ("on" if a > 0.5 else "off") and "map_auroc_oriented" not in res.table
    fig, table = figures.program_panels(res)
    assert table is res.table and len(fig.axes) == 2 * 5 + 2  # and a colour bar per feature map
    assert _titles(fig)[7] == f"feature map: fires {res.table.fires[1]} stroma\nAUROC {a:.2f} · r = \u22120.40"


def test_localisation_from_channel_scores():
    rng = np.random.default_rng(0)
    scores = pd.DataFrame({"program": ["p1", "p1", "p2"], "kind": ["random", "tracks", "tracks"],
                           "feature": ["f1", "f2", "f3"], "map_auroc": rng.uniform(size=3)})
    fig, table = figures.localisation(scores, n_random=1, n_tiles=9, seed=0)
    assert table is scores and _titles(fig) == ["Program-tracking channel vs 1 random channels, 9 test tiles away "
                                                "from edges"]


def test_draw_only_figures_of_06_08_09_from_their_tables():
    d = _tables_08_06_09()
    assert _titles(figures.trait_training_curves(d["history"], ["A", "B"])) == ["A", "B"]
    assert len(figures.table1_auc(d["tab1"]).axes[0].collections) == 3 + 1  # three ensembles and the runs' bars
    assert _titles(figures.score_distributions(d["scores"])) == ["test", "OOD-near", "OOD-all"]
    assert len(figures.association_counts(d["counts"], d["per_feature"]).axes) == 2
    fig, table = figures.enrichment_curves(d["gsea"], d["curves"], n=1)
    assert len(table) == 10 and set(table.list) == {"l1"}
    assert figures.annotated_heatmap(d["heat"], title="h").axes[0].get_title() == "h"
    assert "(a) 3-fold cross-validation AUC" in _titles(figures.model_comparison(d["fold_auc"], d["boots"],
                                                                                ["nn", "rf"]))
    assert _titles(figures.training_loss(d["ae"], title="ae")) == ["ae"]
    assert [b.get_width() for b in figures.gene_masking(d["masking"]).axes[0].patches] == [0.5, 0.8]
    fig, table = figures.saliency_heatmap(d["sal"], d["traits"])
    assert len(table) == 6 and table.SAMPID.iloc[0] in ("s1", "s3")


# --------------------------------------------------------------------------
# layering
# --------------------------------------------------------------------------
def _imports(path: Path) -> set[str]:
    """Every module a file imports, at its top or inside functions (relative imports resolved in histo_utils)."""
    pkg = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = pkg.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([node.module] if node.module else []))
            out |= {base} | {f"{base}.{a.name}" for a in node.names}
    return out


def _drawing_imports(module: str) -> list[str]:
    return sorted(i for i in _imports(PACKAGE / f"{module}.py")
                  if i.split(".")[0] in ("matplotlib", "seaborn") or i.startswith("histo_utils.plotting"))


@pytest.mark.parametrize("module", METHOD_MODULES)
def test_method_modules_import_no_drawing_library(module):
    found = _drawing_imports(module)
    assert not found, f"histo_utils.{module} imports {found}: its drawings belong in histo_utils.figures"


def test_figures_import_no_computing_library():
    """A drawing runs no test, fit or network: no scipy, lifelines, statsmodels, scikit-learn, torch, gseapy."""
    banned = ("scipy", "lifelines", "statsmodels", "sklearn", "torch", "gseapy")
    for path in sorted((PACKAGE / "figures").glob("*.py")):
        found = sorted(i for i in _imports(path) if i.split(".")[0] in banned)
        assert not found, f"{path.name} imports {found}"
