"""Planted-truth checks of notebooks 06-09: trackers, GSEA recovery, masking/saliency truth, tile and HTI truth."""
import numpy as np
import pandas as pd
import pytest

from histo_utils import truth


def _ftruth():
    return pd.DataFrame({"eta2_tissue": [0.1, 0.2, 0.3, 0.4],
                         "r_program_a": [0.1, -0.9, 0.5, 0.0],
                         "r_program_b": [0.7, 0.2, -0.1, 0.3]}, index=["f0", "f1", "f2", "f3"])


def test_program_trackers_and_traits_take_the_largest_absolute_r():
    ft = _ftruth()
    assert truth.program_trackers(ft) == {"a": "f1", "b": "f0"}  # |-0.9| beats 0.5
    assert truth.program_trackers(ft, ["b"]) == {"b": "f0"}
    with pytest.raises(ValueError, match="not planted"):
        truth.program_trackers(ft, ["c"])
    info = truth.program_traits(ft, ["a", "b"])
    assert info.trait.tolist() == ["a_feature", "b_feature"] and info.r_within_tissue.tolist() == [-0.9, 0.7]
    assert truth.planted_sets(info) == {"a_feature": "PLANTED_PROGRAM_A", "b_feature": "PLANTED_PROGRAM_B"}
    picked = truth.random_features(ft, ["f1"], 2, seed=0)
    assert len(set(picked)) == 2 and "f1" not in picked and picked == truth.random_features(ft, ["f1"], 2, seed=0)


def test_train_validation_feature_truth_uses_only_those_slides():
    rng = np.random.default_rng(0)
    n = 40
    prog = rng.normal(size=n)
    samples = pd.DataFrame({"SAMPID": [f"s{i}" for i in range(n)],
                            "split": ["train"] * 20 + ["validation"] * 10 + ["test"] * 10})
    feats = pd.DataFrame({"f0": prog + 0.01 * rng.normal(size=n), "f1": rng.normal(size=n), "const": 1.0},
                         index=samples.SAMPID)
    feats.loc["s35", "f1"] = 100.0  # a test slide must not change anything
    tsamples = pd.DataFrame({"SAMPID": samples.SAMPID, "SMTS": "Lung", "program_x": prog,
                             "ischemic_severity": rng.normal(size=n)})
    ft = truth.train_validation_feature_truth(feats, samples, pd.concat([tsamples, tsamples.iloc[:3]]))
    assert list(ft.index) == ["f0", "f1"]  # the constant feature is left out
    ref = truth.feature_truth(feats.iloc[:30, :2], tsamples.set_index("SAMPID"))
    pd.testing.assert_frame_equal(ft, ref)
    assert ft.loc["f0", "r_program_x"] > 0.99


def test_gsea_recovery_and_decoys():
    gsea = pd.DataFrame({"list": ["t/f1"] * 3 + ["t/f9"] * 2, "why": ["tracks program_a"] * 3 + ["named"] * 2,
                         "term": ["PLANTED_PROGRAM_A", "DECOY_1", "X", "DECOY_2", "PLANTED_PROGRAM_A"],
                         "rank": [1, 2, 3, 1, 2], "nes": [2.5, 1.0, 0.3, 1.8, 0.2],
                         "fdr": [0.001, 0.3, 0.9, 0.01, 0.9]})
    conf = pd.DataFrame({"list": ["RIN", "RIN", "log_ischemic_time"], "term": ["X", "PLANTED_RIN", "DECOY_3"],
                         "rank": [1, 2, 1], "nes": [2.0, 1.5, 1.1], "fdr": [0.01, 0.02, 0.5]})
    rec = truth.gsea_recovery(gsea, conf).set_index("ranking")
    assert list(rec.index) == ["t/f1", "confounder RIN"]  # only tracking features; ischemia set not tested
    assert rec.loc["t/f1", "rank"] == 1 and rec.loc["confounder RIN", "rank"] == 2
    assert truth.decoy_false_discoveries([gsea, conf], fdr=0.05) == {"decoy tests": 3, "decoys with FDR < 0.05": 1,
                                                                      "lists": 3}


def test_masking_and_saliency_truth():
    masking = pd.DataFrame({"trait": ["a"] * 3, "gene_set": ["DECOY_1", "PLANTED_PROGRAM_A", "DECOY_2"],
                            "rank": [1, 2, 3]})
    mt = truth.masking_truth(masking, {"a": "PLANTED_PROGRAM_A"})
    assert mt.iloc[0][["rank", "n_sets", "best_decoy_rank"]].tolist() == [2, 3, 1]
    # two positive samples: the planted set first in one, second in the other
    sal = pd.DataFrame({"trait": "a", "SAMPID": ["s1", "s1", "s2", "s2", "s3", "s3"], "positive": [1, 1, 1, 1, 0, 0],
                        "term": ["PLANTED_PROGRAM_A", "DECOY_1"] * 3, "nes": [2.0, 1.0, 0.5, 1.5, 0.1, 0.2],
                        "fdr": [0.01, 0.5, 0.01, 0.01, 0.9, 0.9]})
    from histo_utils.radiogenomics import saliency_rates

    rates = saliency_rates(sal)
    st = truth.saliency_truth(sal, rates, {"a": "PLANTED_PROGRAM_A"}).iloc[0]
    assert st.rate_positive == 1.0 and st.rate_negative == 0.0 and st.decoy_rate_positive == 0.5
    assert st.median_rank_in_positive == 1.5


def test_tile_accuracy_before_and_after_denoising():
    calls = pd.DataFrame({"A": [1, 1, 0, 0], "B": [0, 1, 1, 0]})
    denoised = np.array([[1, 0], [1, 1], [0, 1], [0, 1]])
    prob = pd.DataFrame({("A", 0): [0.9, 0.8, 0.2, 0.1], ("B", 0): [0.1, 0.9, 0.2, 0.3]})
    prob.columns = pd.MultiIndex.from_tuples(prob.columns)
    tt = pd.DataFrame({"true_A": [1, 1, 0, 0], "true_B": [0, 1, 0, 0]})
    acc = truth.tile_accuracy(calls, denoised, prob, tt, np.array([False, False, True, True])).set_index(
        ["trait", "set"])
    assert acc.loc[("A", "all tiles"), "tile_accuracy"] == 1.0 and acc.loc[("A", "all tiles"), "tile_auc"] == 1.0
    assert acc.loc[("B", "all tiles"), "tile_accuracy"] == 0.75
    assert acc.loc[("B", "test + OOD slides"), "tile_accuracy_denoised"] == 0.0
    assert acc.loc[("B", "test + OOD slides"), "n_tiles"] == 2



def test_localisation_strength_rank():
    rows = []
    for prog, tracker in (("nuclear_density", "t1"), ("stroma_fraction", "t2"), ("lumen_size", "t3")):
        rows += [{"program": prog, "kind": "tracks", "feature": tracker, "auroc": 0.9}]
        rows += [{"program": prog, "kind": "random", "feature": f"r{j}", "auroc": a}
                 for j, a in enumerate([0.5, 0.05, 0.6])]  # |0.05 - 0.5| = 0.45 beats the tracker's 0.4
    loc = pd.DataFrame(rows)
    rank = truth.tracker_strength_rank(loc, {"nuclear_density": "t1", "stroma_fraction": "t2", "lumen_size": "t3"})
    assert rank.rank_among_random.tolist() == [2, 2, 2] and (rank.n_random == 3).all()


def _toy_localisation():
    """A 1x1-conv network whose channel 0 is the red input and channel 1 minus the red input; red marks nuclei."""
    import torch
    from torch import nn

    net = nn.Sequential(nn.Conv2d(3, 3, 1))
    with torch.no_grad():
        net[0].weight[:] = torch.tensor([[1.0, 0, 0], [-1.0, 0, 0], [0, 0, 1.0]]).view(3, 3, 1, 1)
        net[0].bias[:] = 0.0
    layers = {"c": net[0]}
    rng = np.random.default_rng(0)
    masks, images = [], []
    for k in range(4):
        nuc = np.zeros((8, 8), bool)
        nuc[k:k + 3, 2:5] = True
        img = rng.normal(size=(3, 8, 8)).astype(np.float32) * 0.1
        img[0][nuc] += 2.0
        masks.append({"nuclei": nuc, "stroma": ~nuc, "lumen": np.zeros((8, 8), bool)})
        images.append(img)
    ft = pd.DataFrame({"r_program_nuclear_density": [0.6, -0.6, 0.1], "r_program_stroma_fraction": [0.1, 0.2, 0.3],
                       "r_program_lumen_size": [0.5, 0.5, 0.5]}, index=["c_0", "c_1", "c_2"])
    tiles = pd.DataFrame({"tissue": ["A", "A", "B", "B"]}, index=[10, 11, 12, 13])
    return net, layers, torch.tensor(np.stack(images)), masks, tiles, ft


def test_structure_localisation_reports_where_the_map_fires_unflipped():
    net, layers, x, masks, tiles, ft = _toy_localisation()
    trackers = {"nuclear_density": "c_1", "stroma_fraction": "c_2", "lumen_size": "c_0"}
    loc = truth.structure_localisation(net, layers, x, masks, tiles, ft, trackers, ["c_0", "c_2"])
    nd = loc[loc.program == "nuclear_density"].set_index(["feature", "tile"])
    # c_1 = minus red: it fires off the nuclei (AUROC 0), reported as is though its r is negative
    assert (nd.loc["c_1"].map_auroc == 0.0).all() and (nd.loc["c_1"].r_program < 0).all()
    assert (nd.loc["c_0"].map_auroc == 1.0).all() and (nd.loc["c_1"].kind == "tracks").all()
    assert not {"map_auroc_oriented", "auroc_oriented"} & set(loc.columns)  # no flipped score left
    assert loc[loc.program == "lumen_size"].map_auroc.isna().all()  # empty mask: no AUROC
    assert nd.loc["c_0"].tissue.tolist() == ["A", "A", "B", "B"] and sorted(loc.tile.unique()) == [10, 11, 12, 13]
    from histo_utils import visualization
    from histo_utils.metrics import auc

    j = 2
    g = np.abs(visualization.guided_backprop(net, net[0], 2, x)).sum(1)[j]
    sf = loc[(loc.program == "stroma_fraction") & (loc.feature == "c_2") & (loc.tile == 12)]
    assert sf.auroc.item() == pytest.approx(auc(g.ravel(), masks[j]["stroma"].ravel()))
    rank = truth.tracker_localisation_rank(loc, trackers).set_index("program")
    # the tracker fires off the nuclei (0) below both random channels (c_0: 1, c_2: ~0.5): last; lumen has no tiles
    assert rank.loc["nuclear_density", "rank_among_random"] == 3 and rank.loc["nuclear_density", "tracker_auroc"] == 0
    assert rank.loc["nuclear_density", "fires"] == "off" and rank.loc["nuclear_density", "r_sign"] == -1
    assert "lumen_size" not in rank.index
    per, by_tissue = truth.localisation_tables(loc, trackers)
    assert set(by_tissue.tissue) == {"A", "B"} and {"gbp_rank", "gbp_strength", "r", "r_sign"} <= set(per.columns)
    text = truth.localisation_reading(per, by_tissue)
    assert ("**nuclear_density** (tracker c_1, across-sample r = \u22120.60): its map fires off the nuclei, AUROC 0.00 "
            "over 4 tiles; rank 3 of 3") in text
    with pytest.raises(ValueError, match="group by"):
        truth.tracker_localisation_rank(loc, trackers, by=("tissue",))


def test_a_tracker_that_fires_on_its_structure_with_negative_r_ranks_on_the_unflipped_auroc():
    """Issue 30: a channel high on the mask whose across-sample r is negative fires *on* the structure."""
    net, layers, x, masks, tiles, ft = _toy_localisation()
    ft.loc["c_0", "r_program_nuclear_density"] = -0.7  # red (high on the nuclei), yet r < 0 across samples
    trackers = {"nuclear_density": "c_0", "stroma_fraction": "c_2", "lumen_size": "c_2"}
    loc = truth.structure_localisation(net, layers, x, masks, tiles, ft, trackers, ["c_1", "c_2"])
    per, by_tissue = truth.localisation_tables(loc, trackers)
    nd = per.set_index("program").loc["nuclear_density"]
    assert nd.tracker_auroc == 1.0 and nd.fires == "on"  # where it fires: on the nuclei, not 1 - 1 = 0
    assert nd.r == pytest.approx(-0.7) and nd.r_sign == -1  # the sign of r, separately
    assert nd.score == "map_auroc" and nd.rank_among_random == 1 and nd.n_random == 2  # ranked on the unflipped
    t = by_tissue[by_tissue.program == "nuclear_density"]
    assert (t.rank_among_random == 1).all() and (t.fires == "on").all() and (t.r_sign == -1).all()
    text = truth.localisation_reading(per, by_tissue)
    assert "tracker c_0, across-sample r = \u22120.70): its map fires on the nuclei, AUROC 1.00" in text
    assert "Ranked first among the random channels on this score: nuclear_density" in text


def test_localisation_reading_follows_the_tables():
    net, layers, x, masks, tiles, ft = _toy_localisation()
    trackers = {"nuclear_density": "c_0", "stroma_fraction": "c_2", "lumen_size": "c_2"}
    per, by_tissue = truth.localisation_tables(
        truth.structure_localisation(net, layers, x, masks, tiles, ft, trackers, ["c_1", "c_2"]), trackers)
    text = truth.localisation_reading(per, by_tissue)
    score = truth.visualization.SCORE_TEXT["map_auroc"]
    assert "Score ranked: map_auroc, " + score in text  # it says which score it ranks
    for r in per.itertuples():  # every tracker's number and rank is the table's
        assert f"AUROC {r.tracker_auroc:.2f} over {r.n_tiles} tiles; rank {r.rank_among_random:.0f} of" in text
    changed = per.copy()
    i = changed.index[changed.program == "nuclear_density"][0]
    changed.loc[i, ["tracker_auroc", "fires", "rank_among_random"]] = [0.31, "off", 2]
    text2 = truth.localisation_reading(changed, by_tissue)
    assert text2 != text and "fires off the nuclei, AUROC 0.31" in text2
    assert "not first: " in text2 and "nuclear_density (rank 2)" in text2
    assert "Ranked first among the random channels on this score: nuclear_density" not in text2
    tissue2 = by_tissue.assign(gbp_tracker_auroc=0.2)
    assert "in A (0.20)" in truth.localisation_reading(per, tissue2)  # |gBP| below 0.5, listed from the table


def test_planted_structures_name_the_structure_of_a_gene_role():
    assert truth.PlantedStructures.structure_of("program_lumen_size") == "lumen"
    assert truth.PlantedStructures.structure_of("program_stroma_fraction") == "stroma"
    assert truth.PlantedStructures.structure_of("tissue_Liver") == "nuclei"
    assert truth.PlantedStructures.structure_of("") == "nuclei"


def test_channel_scores_weigh_tissues_equally():
    loc = pd.DataFrame({"program": "p", "kind": "random", "feature": "f", "tile": range(4),
                        "tissue": ["A", "A", "A", "B"], "map_auroc": [1.0, 1.0, 1.0, 0.0]})
    assert truth.channel_scores(loc).map_auroc.item() == 0.5  # not 0.75 (the tile mean)
    per = truth.channel_scores(loc, per_tissue=True).set_index("tissue").map_auroc
    assert per.to_dict() == {"A": 1.0, "B": 0.0}


def test_program_panel_tiles_skip_tiles_without_the_structure():
    tiles = pd.DataFrame({"image_id": list("abcd"), "tissue": "T", "x": 0, "y": 0}, index=[5, 6, 7, 8])
    values = pd.DataFrame({"f": [4.0, 3.0, 2.0, 1.0], "g": [4.0, 3.0, 2.0, 1.0]}, index=[5, 6, 7, 8])
    masks = []
    for cover in (0.0, 0.3, 0.3, 0.3):  # tile 5: the structure is absent
        m = np.zeros((10, 10), bool)
        m.flat[: int(100 * cover)] = True
        masks.append({"nuclei": m, "stroma": m, "lumen": np.ones((10, 10), bool)})
    masks[2]["lumen"] = np.zeros((10, 10), bool)
    masks[2]["lumen"][:7] = True  # tile 7: lumen 70 %, the nearest to the 2-60 % range
    ft = pd.DataFrame({"r_program_nuclear_density": [0.5, 0.0], "r_program_stroma_fraction": [0.0, -0.5],
                       "r_program_lumen_size": [0.5, 0.0]}, index=["f", "g"])
    panels, chosen = truth.program_panel_tiles(
        tiles, values, ft, {"nuclear_density": "f", "stroma_fraction": "g", "lumen_size": "f"}, masks)
    p = panels.set_index("program")
    assert p.loc["nuclear_density", "tile"] == 6  # highest value with the structure in view
    assert p.loc["stroma_fraction", "tile"] == 8  # r < 0: the lowest value
    assert p.loc["lumen_size", "tile"] == 7 and p.loc["lumen_size", "mask_fraction"] == pytest.approx(0.7)
    assert chosen["stroma_fraction"].mean() == pytest.approx(0.3)
    with pytest.raises(ValueError, match="4 candidate tiles and 3 masks"):
        truth.program_panel_tiles(tiles, values, ft, {"nuclear_density": "f"}, masks[:3])
