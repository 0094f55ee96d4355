"""The notebook figures draw what their tables hold (panels, titles with the table's numbers)."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from histo_utils import confounders as cf  # noqa: E402
from histo_utils import correlation, crossvariance, figures  # noqa: E402


def _grid(rng):
    rows = []
    for t in ("Liver", "Lung"):
        for vf in (0.95, 0.8):
            for lay in ("all", "0", "1"):
                rows.append({"network": "trained", "tile_px": 256, "tissue": t, "layer": lay, "var_fraction": vf,
                             **{f"{s}_{k}": rng.random() for s in ("image", "expression")
                                for k in ("shared", "null_mean", "null_q95", "excess", "p")}})
    g = pd.DataFrame(rows)
    return g.assign(table=g.network + " " + g.tile_px.astype(str) + " px")


def test_shared_variance_figures_have_one_panel_per_fraction_and_side():
    g = _grid(np.random.default_rng(0))
    fig = figures.shared_vs_null_dots(g[g.layer == "all"], [0.95, 0.8])
    assert len(fig.axes) == 4 and fig.axes[0].get_title() == "S_image, 95.0% of the variance"
    assert len(fig.axes[0].collections) == 2  # dots and null dashes of the one table
    fig = figures.excess_by_layer(g[g.layer != "all"], [0.95, 0.8], ["0", "1"])
    assert len(fig.axes) == 2
    fig = figures.excess_strips(g.assign(stage="x"), hue="stage", title="t", boxes=True)
    assert [a.get_ylabel() for a in fig.axes] == ["S_image − null mean", "S_expression − null mean"]
    rng = np.random.default_rng(1)
    latent = rng.normal(size=(30, 1))
    res = crossvariance.shared_variance(latent @ rng.normal(size=(1, 8)) + rng.normal(size=(30, 8)),
                                        latent @ rng.normal(size=(1, 9)), var_fraction=0.9)
    fig = figures.pc_cross_heatmaps({"Liver": res}, title="x")
    assert fig.axes[0].get_title().startswith(f"Liver\nS_img {res.image:.2f}")
    plt.close("all")


def test_correlation_figures_show_their_counts():
    rng = np.random.default_rng(0)
    f = pd.DataFrame(rng.normal(size=(20, 4)), columns=["0_0", "0_1", "1_0", "1_1"])
    g = pd.DataFrame(rng.normal(size=(20, 5)))
    scan = correlation.scan_pairs(f, g, r_min=0.0, fdr_keep=0, histogram_bins=20)
    pairs = scan.pairs.assign(perm_p=0.01)
    r = np.linspace(-0.9, 0.9, 50)
    fig = figures.correlation_histogram(scan, correlation.null_r_density(r, 20), r, pairs, n_permutations=99, r_min=0)
    assert fig.axes[1].get_title().startswith(f"{len(pairs):,} pairs")
    grid = pd.DataFrame({"R_T": [0.7, 0.7, 0.8, 0.8], "E_T": [0, 5, 0, 5], "pairs": [4, 3, 2, 1],
                         "genes": [2, 2, 1, 1], "features": [3, 2, 1, 1]})
    fig = figures.count_heatmaps(grid, title="T")
    assert len(fig.axes) == 3 and sorted(t.get_text() for t in fig.axes[0].texts) == ["1", "2", "3", "4"]
    counts = correlation.genes_per_layer(pd.DataFrame({"layer": ["0", "1"], "gene": ["a", "b"], "t": ["L", "M"]}),
                                         ["0", "1"], by="t")
    fig = figures.stacked_layer_bars(counts, ylabel="genes")
    assert len(fig.axes[0].patches) == 4  # 2 layers × 2 tissues
    empty = figures.stacked_layer_bars(counts.iloc[:, :0], ylabel="genes")
    assert "no significant pair" in empty.axes[0].texts[0].get_text()
    plt.close("all")


def test_confounder_figures_one_panel_per_term_and_kind():
    rng = np.random.default_rng(0)
    n = 40
    s = pd.DataFrame({"SMTS": "Liver", "SMTSISCH": rng.uniform(1, 900, n), "SMRIN": rng.uniform(5, 9, n),
                      "SMCENTER": rng.choice(["B1", "C1"], n), "AGE": rng.choice(["20-29", "60-69"], n),
                      "SEX": rng.choice([1, 2], n)}, index=[f"S{i}" for i in range(n)])
    s["log_isch"] = cf.log_ischemic_time(s.SMTSISCH)
    e = pd.DataFrame(rng.normal(size=(n, 5)) + 5, index=s.index, columns=list("abcde"))
    f = pd.DataFrame(rng.normal(size=(n, 3)), index=s.index, columns=["0_0", "0_1", "1_0"])
    designs, _ = cf.build_designs(s)
    part = cf.variance_by_confounder(f, e, designs, symbols=pd.Series({"a": "A"}))
    diag = cf.strongest_columns(part, f, e, s, designs, ["RIN", "centre"])
    fig = figures.confounder_diagnostics(diag, pd.Series({"a": "A"}), numeric=cf.NUMERIC_TERMS,
                                         source_columns=cf.SOURCE_COLUMNS)
    assert len(fig.axes) == 4 and fig.axes[0].get_title().startswith("RIN: gene")
    # rows: gene, feature; columns: terms
    assert fig.axes[2].get_title().startswith("RIN: feature") and fig.axes[1].get_xlabel() == "SMCENTER"
    ov = part.overall.pivot_table(index="term", columns="table", values=["fraction_of_variance", "fraction_adjusted"],
                                  aggfunc="mean")
    fig = figures.variance_bars(ov)
    assert "all together: expression" in fig.axes[0].get_title()
    plt.close("all")


def _by_network():
    """Counts of significant pairs per table and R_T as significant_counts_by_table returns them."""
    rows = []
    counts = {("trained", 256): (900, 60), ("untrained", 256): (300, 20), ("compact_bn-trained", 256): (50, 9),
              ("trained", 512): (500, 40), ("untrained", 512): (200, 15), ("compact_bn-trained", 512): (80, 50)}
    for (net, px), (pairs, genes) in counts.items():
        for rt, f in ((0.7, 2), (0.8, 1)):
            rows.append({"R_T": rt, "E_T": 5.0, "pairs": pairs * f, "genes": genes * f, "features": 10 * f,
                         "tissues": 3, "network": net, "tile_px": px, "features_tested": 100})
    prov = {"arch": "compact", "tables": {f"features_{n}_{px}px.parquet": {"network": n, "tile_px": px,
                                                                           "arch": "compact_bn" if "bn" in n else "compact"}
                                          for n, px in counts}}
    acc = pd.DataFrame([{"arch": a, "level": lv, "split": "test", "class": "(all)", "accuracy": v}
                        for a, lv, v in (("compact", "tile", 0.9), ("compact", "slide", 0.95),
                                         ("compact_bn", "tile", 0.93), ("compact_bn", "slide", 0.97))])
    return pd.DataFrame(rows), prov, acc


def test_network_comparison_table_figure_and_batch_norm_sentence():
    by, prov, acc = _by_network()
    comp = correlation.network_comparison(by, prov, acc)
    assert comp.index.names == ["arch", "weights", "tile_px"] and len(comp) == 6
    assert list(comp.index)[:3] == [("compact", "trained", 256), ("compact", "trained", 512),
                                    ("compact", "untrained", 256)]
    prov_bn_first = {**prov, "archs": ["compact_bn", "compact"]}
    assert correlation.network_comparison(by, prov_bn_first, acc).index[0] == ("compact_bn", "trained", 256)
    assert comp.loc[("compact_bn", "trained", 256), "genes @ R_T 0.8"] == 9
    assert comp.loc[("compact", "untrained", 512), "pairs @ R_T 0.7"] == 400
    assert comp.loc[("compact_bn", "trained", 512), "slide_acc_test"] == 0.97
    assert np.isnan(comp.loc[("compact", "untrained", 256), "tile_acc_test"])  # no accuracy for random weights
    assert list(comp.columns[:2]) == ["tile_acc_test", "slide_acc_test"] and comp.attrs["E_T"] == 5.0
    effect = correlation.batch_norm_effect(comp, r_threshold=0.8)
    assert effect[["tile_px", "genes", "genes_bn", "weakens"]].values.tolist() == [[256, 60, 9, True],
                                                                                  [512, 40, 50, False]]
    text = correlation.describe_batch_norm_effect(effect, r_threshold=0.8, e_threshold=5.0)
    assert "9 genes in 50 pairs with batch norm against 60 genes in 900 pairs" in text
    assert "depends on the tile size" in text
    both = correlation.describe_batch_norm_effect(effect[effect.tile_px == 256], r_threshold=0.8, e_threshold=5.0)
    assert "**weakens**" in both
    assert "not measured" in correlation.describe_batch_norm_effect(effect.iloc[:0], r_threshold=0.8,
                                                                     e_threshold=5.0)
    with pytest.raises(ValueError, match="not among"):
        correlation.batch_norm_effect(comp, r_threshold=0.9)
    fig = figures.network_comparison_bars(comp, title="test")
    ax = fig.axes[0]
    assert len(ax.patches) == 6 * 2  # one bar per network and tile size at each R_T
    heights = sorted(p.get_height() for p in ax.patches)
    assert heights == sorted(comp[["genes @ R_T 0.8", "genes @ R_T 0.7"]].to_numpy().ravel().tolist())
    plt.close(fig)


def test_network_comparison_names_tables_missing_from_the_provenance():
    by, prov, acc = _by_network()
    prov["tables"].pop("features_untrained_512px.parquet")
    prov["tables"].pop("features_untrained_256px.parquet")
    with pytest.raises(ValueError, match="untrained"):
        correlation.network_comparison(by, prov, acc)


def test_training_curves_and_layer_lines_draw_every_network():
    h = pd.DataFrame([{"arch": a, "epoch": e, "train_loss": 1 / e, "val_loss": 1.2 / e, "train_acc": 0.5 + e / 10,
                       "val_acc": 0.4 + e / 10, "best": True} for a in ("compact", "compact_bn") for e in (1, 2, 3)])
    fig = figures.training_curves(h)
    assert len(fig.axes[0].lines) == 4 and len(fig.axes[1].collections) == 2
    plt.close(fig)
    lp = pd.DataFrame([{"network": n, "program": p, "layer_index": i, "abs_r": 0.1 * i, "tile_px": 256}
                       for n in ("trained", "trained (shuffled)", "compact_bn-trained", "compact_bn-trained (shuffled)")
                       for p in ("program_a", "program_b") for i in range(4)])
    fig = figures.layer_tracking_lines(lp, title="t")
    assert len(fig.axes) == 2 and len(fig.axes[0].lines) == 4
    plt.close(fig)
