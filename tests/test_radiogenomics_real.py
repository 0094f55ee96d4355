"""Notebook 09 on real data: traits chosen from the data, pre-training samples found from the join."""
import numpy as np
import pandas as pd
import pytest

from histo_utils import io, radiogenomics


def _paired(seed=0, n=60):
    """Two gene modules, each driven by a latent program within tissue; features track them (and noise)."""
    rng = np.random.default_rng(seed)
    tissue = np.repeat(["A", "B", "C"], n // 3)
    shift = pd.Series({"A": 0.0, "B": 3.0, "C": -2.0})[tissue].to_numpy()
    p1, p2 = rng.normal(size=n), rng.normal(size=n)
    genes = {f"g1_{k}": p1 + 0.5 * rng.normal(size=n) + shift for k in range(12)}
    genes |= {f"g2_{k}": -p2 + 0.5 * rng.normal(size=n) for k in range(8)}
    genes |= {f"n_{k}": rng.normal(size=n) + shift for k in range(40)}
    feats = {"f_p1": p1 + 0.2 * rng.normal(size=n), "f_p1b": p1 + 0.3 * rng.normal(size=n),
             "f_p2": p2 + 0.2 * rng.normal(size=n)}
    feats |= {f"f_noise{k}": rng.normal(size=n) + shift for k in range(10)}
    idx = pd.Index([f"S{k}" for k in range(n)], name="SAMPID")
    return pd.DataFrame(feats, index=idx), pd.DataFrame(genes, index=idx), pd.Series(tissue, index=idx)


def test_choose_traits_finds_one_feature_per_gene_module():
    f, g, t = _paired()
    traits = radiogenomics.choose_traits(f, g, t.to_numpy(), n_traits=2)
    # the first module (12 genes) first, its duplicate tracker skipped, then the second module's feature
    assert traits.feature.tolist() == ["f_p1", "f_p2"]
    assert traits.trait.tolist() == ["f_p1_high", "f_p2_high"]
    assert traits.r_within_tissue.iloc[0] > 0 and traits.r_within_tissue.iloc[1] < 0  # oriented by its genes
    lab = radiogenomics.binarize_traits(f, t, traits)
    assert lab.sum().between(25, 35).all()
    chosen = radiogenomics.trait_definitions(f, g, t, n_traits=2)
    assert chosen.feature.tolist() == ["f_p1", "f_p2"]
    named = radiogenomics.trait_definitions(f, g, t, trait_features=["f_noise3"])
    assert named.feature.tolist() == ["f_noise3"]
    with pytest.raises(ValueError, match="trait_features"):
        radiogenomics.choose_traits(f[[c for c in f if c.startswith("f_noise")]], g[[c for c in g if c[0] == "n"]],
                                    t.to_numpy())


def test_pretraining_samples_are_the_expression_without_a_slide(tmp_path):
    data_dir = tmp_path / "gtex"
    (data_dir / "slides").mkdir(parents=True)
    ids = ["GTEX-AAAA1-0126-SM-00001", "GTEX-AAAA1-0005-SM-00002", "GTEX-AAAA2-0226-SM-00003",
           "GTEX-AAAA2-0326-R10a-SM-00004", "GTEX-AAAA3-0008-SM-00005"]
    rng = np.random.default_rng(0)
    tpm = pd.DataFrame(rng.gamma(1, 5, (6, len(ids))).round(2), index=[f"ENSG{k:011d}.1" for k in range(6)],
                       columns=ids)
    io.write_gct(tpm, data_dir / "GTEx_Analysis_2017-06-05_v8_RNASeQCv1.1.9_gene_tpm.gct.gz",
                 description=pd.Series([f"G{k}" for k in range(6)], index=tpm.index))
    for name in ("GTEx_Analysis_v8_Annotations_SampleAttributesDS.txt",
                 "GTEx_Analysis_v8_Annotations_SubjectPhenotypesDS.txt"):
        (data_dir / name).write_text("SAMPID\n")
    out = tmp_path / "run"
    # 01 listed three slides (one failed to open: still a slide, never a pre-training sample)
    io.write_table(pd.DataFrame({"image_id": ["GTEX-AAAA1-0126", "GTEX-AAAA2-0326", "GTEX-AAAA2-0226"],
                                 "status": ["ok", "ok", "error"]}), out / "01_tiling" / "slides.tsv")
    expr_path = data_dir / "GTEx_Analysis_2017-06-05_v8_RNASeQCv1.1.9_gene_tpm.gct.gz"
    assert radiogenomics.expression_only_samples(out, expr_path) == ["GTEX-AAAA1-0005-SM-00002",
                                                                     "GTEX-AAAA3-0008-SM-00005"]
    pre = radiogenomics.pretraining_expression(tpm.index[:4], ["GTEX-AAAA1-0126-SM-00001"], data_dir=data_dir,
                                               out_dir=out)  # auto: no synthetic cohort here, so the join
    assert list(pre.index) == ["GTEX-AAAA1-0005-SM-00002", "GTEX-AAAA3-0008-SM-00005"]
    np.testing.assert_allclose(pre.iloc[0].to_numpy(), np.log2(1 + tpm.iloc[:4, 1].to_numpy()), rtol=1e-5)
    with pytest.raises(ValueError, match="no synthetic cohort"):
        radiogenomics.pretraining_expression(tpm.index[:4], [], data_dir=data_dir, out_dir=out, source="simulate")
