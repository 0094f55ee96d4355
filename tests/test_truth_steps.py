"""Planted-truth checks of notebooks 00, 03 and 05 (histo_utils.truth) and notebook 02's evaluation tables."""
import numpy as np
import pandas as pd
import pytest

from histo_utils import confounders as cf
from histo_utils import features, truth
from histo_utils.data import FeatureKey
from histo_utils.training import accuracy_by_split, confusion_table, prediction_tables


def test_planted_summary_and_program_extremes():
    genes = pd.DataFrame({"Name": list("abcde"), "role": ["noise", "tissue_Liver", "tissue_Lung", "program_x", "noise"]})
    s = pd.DataFrame({"image_id": ["i1", "i2", "i3", "i4"], "SMTS": ["Liver", "Liver", "Lung", "Lung"],
                      "has_rna": [True, False, True, True], "has_slide": [True, True, False, True],
                      "duplicate_of": [None, "x", None, None], "corrupt": [False, False, False, True],
                      "program_x": [0.5, -1.0, 2.0, 3.0], "program_y": [1.0, 2.0, 0.0, -1.0]})
    p = truth.planted_summary(genes, s).set_index(["kind", "what"])["count"]
    assert p[("genes", "noise")] == 2 and p[("genes", "tissue-specific")] == 2
    assert p[("samples", "slide without RNA")] == 1 and p[("samples", "RNA without slide")] == 1
    assert p[("samples", "extra RNA aliquot")] == 1 and p[("samples", "damaged slide file")] == 1
    assert p[("tissue", "Lung")] == 2
    ext = truth.program_extremes(s, ["x", "y"])
    assert len(ext) == 2 * 2 * 2 and ext.tissue.tolist()[:4] == ["Liver"] * 4
    liver = ext[ext.tissue == "Liver"].set_index(["program", "end"])
    assert liver.loc[("x", "low"), "image_id"] == "i2" and liver.loc[("x", "high"), "value"] == 0.5
    assert ext.set_index(["tissue", "program", "end"]).loc[("Lung", "y", "high"), "image_id"] == "i3"


def test_planted_vs_recovered_follows_the_planted_loadings():
    rng = np.random.default_rng(0)
    n = 120
    s = pd.DataFrame({"SMTS": "Liver", "SMTSISCH": rng.uniform(10, 1200, n), "SMRIN": rng.uniform(5, 9, n),
                      "SMCENTER": rng.choice(["B1", "C1"], n), "AGE": rng.choice(["20-29", "60-69"], n),
                      "SEX": rng.choice([1, 2], n)}, index=[f"S{i}" for i in range(n)])
    truth_samples = s.reset_index(names="SAMPID").assign(has_rna=True)
    lt = np.log1p(s.SMTSISCH)
    z = (lt - lt.mean()) / lt.std(ddof=0)
    load = np.linspace(0.2, 1.5, 8)
    expr = pd.DataFrame({f"I{i}": 6 + b * z + 0.3 * rng.normal(size=n) for i, b in enumerate(load)}, index=s.index)
    expr = expr.assign(**{f"R{i}": 6 + b * (s.SMRIN - 7) + 0.3 * rng.normal(size=n) for i, b in enumerate(load)})
    genes = pd.DataFrame({"Name": expr.columns, "role": ["ischemia"] * 8 + ["rin"] * 8,
                          "loading_ischemia": list(load) + [0] * 8, "loading_rin": [0] * 8 + list(load)})
    designs, _ = cf.build_designs(s, min_samples=10)
    part = cf.variance_by_confounder(expr[["I0"]], expr, designs, symbols=pd.Series(dtype=str))
    comp = truth.planted_vs_recovered(genes, truth_samples, expr, s, designs, part.genes)
    assert sorted(comp.term.unique()) == ["RIN", "log_ischemic_time"] and len(comp) == 16 and not comp.at_floor.any()
    np.testing.assert_allclose(comp.recovered, comp.planted, atol=0.12)  # sampling noise of 120 samples
    agree = truth.planted_agreement(comp)
    assert (agree.r > 0.95).all() and (agree.genes == 8).all()
    by_role = truth.r2_by_role(part.genes, genes)
    assert by_role.loc["ischemia", "log_ischemic_time"] > 0.3 > by_role.loc["ischemia", "RIN"]


def test_scan_recovery_and_the_other_truth_tables():
    groups = truth.gene_groups(pd.DataFrame({"Name": ["p1", "t1", "n1", "n2"],
                                             "role": ["program_x", "tissue_Liver", "noise", "noise"]}))
    ftruth = pd.DataFrame({"eta2_tissue": [0.9, 0.1], "r_program_x": [0.1, 0.8], "r_ischemia": [0.0, 0.0]},
                          index=["0_0", "1_0"])
    found = pd.DataFrame({"feature": ["1_0", "0_0", "1_0"], "gene": ["p1", "t1", "n1"]})
    summary, per_role = truth.scan_recovery({"scan": (found, ("program", "tissue"))}, groups, ftruth,
                                            tested=["p1", "t1", "n1", "n2"])
    row = summary.loc["scan"]
    assert row.pairs == 3 and row.pair_precision == pytest.approx(2 / 3) and row.noise_genes_found == 1
    assert row.program_recall == 1.0 and row.tissue_recall == 1.0
    assert set(per_role.method) == {"scan"}
    pairs = pd.DataFrame({"gene": ["t1", "t1", "p1"], "p_g_t_f": [0.5, 0.001, 0.001]})
    ind = truth.indirect_by_group(pairs, groups, alphas=[0.01])
    assert ind.loc["tissue", "pairs"] == 2 and ind.loc["tissue", "g–t–f at α=0.01"] == 0.5
    assert ind.loc["program", "g–t–f at α=0.01"] == 0.0
    track = truth.tracking_by_layer(ftruth.assign(r_program_x=[-0.9, 0.2]), ["1", "0"])
    assert track.index.tolist() == ["1", "0"] and track.loc["0", "r_program_x"] == 0.9


def test_prediction_and_accuracy_tables():
    tiles = pd.DataFrame({"image_id": ["a", "a", "a", "b", "b"], "x": range(5), "y": 0,
                          "SMTS": ["L", "L", "L", "M", "M"], "split": ["test"] * 3 + ["validation"] * 2})
    probs = np.array([[0.9, 0.1, 0], [0.2, 0.8, 0], [0.6, 0.4, 0], [0.1, 0.9, 0], [0.3, 0.1, 0.6]])
    pred, slides = prediction_tables(tiles, probs, ["L", "M", "N"])
    assert pred.pred.tolist() == ["L", "M", "L", "M", "N"] and pred.p_max.tolist() == [0.9, 0.8, 0.6, 0.9, 0.6]
    assert slides.set_index("image_id").pred.to_dict() == {"a": "L", "b": "M"}  # tie in b: smallest class
    acc = accuracy_by_split(pred, slides, merge_groups={"LM": ["L", "M"]}).set_index(["level", "split", "class"])
    assert acc.loc[("tile", "test", "(all)"), "accuracy"] == pytest.approx(2 / 3)
    assert acc.loc[("tile (merged)", "test", "(all)"), "accuracy"] == 1.0
    assert acc.loc[("slide", "validation", "(all)"), "accuracy"] == 1.0
    cm = confusion_table(pred.SMTS, pred.pred, ["L", "M", "N"])
    assert cm.shape == (3, 3) and cm.to_numpy().sum() == 5 and cm.loc["L", "M"] == 1 and cm.loc["N"].sum() == 0


def test_layer_program_tracking_is_above_its_shuffle():
    rng = np.random.default_rng(1)
    ids = [f"i{k}" for k in range(60)]
    s = pd.DataFrame({"SMTS": np.repeat(["A", "B"], 30), "program_x": rng.normal(size=60)}, index=ids)
    table = pd.DataFrame(rng.normal(size=(60, 6)), index=ids, columns=["0_0", "0_1", "0_2", "1_0", "1_1", "1_2"])
    table["1_1"] = s.program_x * 2 + 0.1 * rng.normal(size=60)
    lp = truth_free = features.layer_program_tracking({FeatureKey("trained", 256): table}, s, seed=0)
    assert set(truth_free.network) == {"trained", "trained (shuffled)"} and (lp.tile_px == 256).all()
    real = lp[lp.network == "trained"].set_index("layer")
    assert real.loc["1", "feature"] == "1_1" and real.loc["1", "abs_r"] > 0.95
    assert lp[lp.network == "trained (shuffled)"].abs_r.max() < 0.6
    assert lp.layer_index.tolist() == [0, 1, 0, 1]


def test_stain_fading_and_fields_of_the_synthetic_cohort(tiny_cohort):
    out, _ = tiny_cohort
    s = pd.read_csv(out / "truth" / "samples.tsv", sep="\t")
    ok = s[s.has_slide & ~s.corrupt].drop_duplicates("image_id")
    mask = truth.read_true_mask(out / "truth", ok.image_id.iloc[0])
    assert mask.dtype == bool and 0 < mask.mean() < 1
    field = truth.tissue_field(out / "slides", out / "truth", ok.image_id.iloc[0], size_um=128, out_mpp=1.0)
    assert field.shape == (128, 128, 3) and field.mean() < 235  # tissue, not white glass
    with pytest.raises(FileNotFoundError, match="truth/ folder of a synthetic cohort"):
        truth.read_true_mask(out / "truth", "GTEX-NONE-0000")
    fading = truth.stain_fading(ok, out / "slides", out / "truth", thumbnail_px=200)
    assert len(fading) == len(ok) and fading.od_mean.gt(0).all()
    np.testing.assert_allclose(fading.groupby("SMTS").od_centred.mean(), 0, atol=1e-12)


def test_write_feature_tables_writes_the_catalogue(tiny_cohort, tmp_path):
    """Notebook 02's tables: one per network and grid, named by FeatureKey, the listing feature_tables reads."""
    import json

    import torch

    from histo_utils import data, io, models, tiling
    from histo_utils.training import tissue_tile_dataset

    out, _ = tiny_cohort
    slides = tiling.list_slides(out / "slides")
    tiles, report = tiling.tile_slides(slides, params=tiling.TilingParams(tile_px=(256,)),
                                       cache_dir=tmp_path / "tiles", workers=1, progress=False)
    truth_s = pd.read_csv(out / "truth" / "samples.tsv", sep="\t").drop_duplicates("image_id")
    samples = truth_s[truth_s.image_id.isin(tiles.image_id)].merge(slides, on="image_id").assign(split="train")
    samples = samples.groupby("SMTS").head(1)  # one slide per tissue: quick
    classes = sorted(samples.SMTS.unique())
    ds = tissue_tile_dataset(tiles, samples, tile_px=256, classes=classes, input_px=32)
    assert set(ds.labels) == set(range(len(classes)))
    torch.manual_seed(0)
    nets = {"trained": models.build_model("compact", len(classes)).eval(),
            "untrained": models.build_model("compact", len(classes)).eval()}
    tables, listing = features.write_feature_tables(nets, {256: ds}, tmp_path, arch="compact", tile_mpp={256: 1.0},
                                                    how="mean", batch_size=8, device="cpu")
    keys = [FeatureKey("trained", 256, "mean"), FeatureKey("untrained", 256, "mean")]
    assert list(tables) == keys and list(listing) == [k.file_name for k in keys]
    for k in keys:
        written = io.read_table(tmp_path / k.file_name)
        pd.testing.assert_frame_equal(written, tables[k])
        assert listing[k.file_name]["n_slides"] == len(samples) == len(written)
        assert listing[k.file_name]["n_features"] == written.shape[1] and listing[k.file_name]["failed_slides"] == []
    assert not np.allclose(tables[keys[0]].to_numpy(), tables[keys[1]].to_numpy())
    # the catalogue reads what notebook 02 writes
    (tmp_path / "run" / "02_training").mkdir(parents=True)
    (tmp_path / "run" / "01_tiling").mkdir()
    for k in keys:
        (tmp_path / k.file_name).rename(tmp_path / "run" / "02_training" / k.file_name)
    (tmp_path / "run" / "02_training" / "features_provenance.json").write_text(
        json.dumps({"aggregation": "mean", "tables": listing}))
    back = data.feature_tables(tmp_path / "run", samples=samples)
    assert list(back) == keys and (back[keys[0]].index == samples.set_index("image_id").loc[
        tables[keys[0]].index, "SAMPID"].to_numpy()).all()
