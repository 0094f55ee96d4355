"""The joined store (issue 21.3) and the expression AnnData (21.2): same numbers as the file join, rebuilt on change."""
import json
import os
import time

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from histo_utils import data, io, store


@pytest.fixture
def run_dir(tmp_path):
    """A run with notebook 01's and 02's outputs and a GCT: 6 slides, one whose features failed, one sample
    absent from the expression file, and a file sample without a slide."""
    rng = np.random.default_rng(0)
    out = tmp_path / "run"
    (out / "01_tiling").mkdir(parents=True)
    (out / "02_training").mkdir()
    ids = [f"GTEX-A{i}-0126" for i in range(6)]
    samples = pd.DataFrame({"image_id": ids, "SAMPID": [f"GTEX-A{i}-0126-SM-{i}" for i in range(6)],
                            "subject_id": [f"GTEX-A{i}" for i in range(6)], "SMTS": ["Liver", "Lung"] * 3,
                            "SMRIN": rng.uniform(5, 9, 6).round(1), "split": ["train"] * 4 + ["test"] * 2,
                            "path": [f"/slides/{i}.svs" for i in ids]})
    io.write_table(samples, out / "01_tiling" / "samples.tsv")
    io.write_table(pd.DataFrame({"image_id": ids, "tile_px": 256, "x": 0, "y": 0}), out / "01_tiling" / "tiles.parquet")
    tables = {}
    for net in ("trained", "untrained"):
        t = pd.DataFrame(rng.normal(size=(5, 4)).astype(np.float32), index=pd.Index(sorted(ids[1:]), name="image_id"),
                         columns=["0_0", "0_1", "blocks.1_0", "cls_0"])
        io.write_table(t, out / "02_training" / f"features_{net}_256px.parquet", index=True)
        tables[f"features_{net}_256px.parquet"] = {"network": net, "tile_px": 256}
    io.write_json({"aggregation": "sum", "arch": "compact", "tables": tables},
                  out / "02_training" / "features_provenance.json")
    genes = [f"ENSG{i:05d}" for i in range(7)]
    cols = ["GTEX-Z9-0001-SM-9", *samples.SAMPID[:5][::-1]]  # file order differs from samples.tsv; A5 missing
    tpm = pd.DataFrame(rng.gamma(2, 10, size=(7, len(cols))), index=genes, columns=cols)
    gct = tmp_path / "expr.gct"
    io.write_gct(tpm, gct, description=pd.Series([f"G{i}" for i in range(7)], index=genes))
    return out, gct


def test_store_gives_the_numbers_of_the_file_join_and_opens_with_anndata(run_dir):
    out, gct = run_dir
    _, samples = data.load_tiling(out)
    by_file = {k: data.features_by_sample(data.load_features(out, k), samples) for k in data.feature_keys(out)}
    e_file, sym_file = data.joined_log_expression(out, gct, use_store=False)
    e_store, sym_store = data.joined_log_expression(out, gct)  # builds the store
    assert store.store_path(out).exists()
    pd.testing.assert_frame_equal(e_store, e_file)
    pd.testing.assert_series_equal(sym_store, sym_file)
    assert list(e_store.index) == [f"GTEX-A{i}-0126-SM-{i}" for i in (4, 3, 2, 1, 0)]  # the file's order
    from_store = data.feature_tables(out)
    assert list(from_store) == list(by_file)
    for k in by_file:
        pd.testing.assert_frame_equal(from_store[k], by_file[k], check_column_type=False)
    joined = ad.read_h5ad(store.store_path(out))
    assert joined.shape == (6, 7) and set(joined.obsm) == {"trained_256px", "untrained_256px"}
    assert np.isnan(joined.obsm["trained_256px"][0]).all()  # the slide whose features failed
    assert np.isnan(joined.X[5]).all() and joined.obs.expression_rank.iloc[5] == -1  # no expression
    assert {"image_id", "path", "SMTS", "split", "SMRIN"} <= set(joined.obs.columns)
    prov = json.loads(joined.uns["provenance_json"])
    assert set(prov["fingerprints"]) == {"01_tiling/samples.tsv", "02_training/features_provenance.json",
                                         "02_training/features_trained_256px.parquet",
                                         "02_training/features_untrained_256px.parquet", str(gct.resolve())}
    expr = ad.read_h5ad(out / "store" / "expression.h5ad")
    feat_obs = sorted(f"GTEX-A{i}-0126" for i in range(5))  # the slides with expression, as feature h5ad rows
    assert list(expr.obs.index) == feat_obs and list(expr.var.index) == list(e_file.columns)
    np.testing.assert_array_equal(expr.X, e_file.loc[expr.obs.SAMPID].to_numpy())
    assert list(expr.var.symbol[:2]) == ["G0", "G1"]


def test_store_is_rebuilt_when_an_input_changes_and_only_then(run_dir):
    out, gct = run_dir
    path = store.store_path(out)
    data.joined_log_expression(out, gct)
    built = path.stat().st_mtime_ns
    data.feature_tables(out)
    data.joined_log_expression(out, gct)
    assert path.stat().st_mtime_ns == built  # unchanged inputs: read, not rebuilt
    # a feature table rewritten with other values (notebook 02 rerun): the store follows
    f = out / "02_training" / "features_trained_256px.parquet"
    t = io.read_table(f)
    t.iloc[:, 0] += 1.0
    io.write_table(t, f, index=True)
    got = data.feature_tables(out)[data.FeatureKey("trained", 256)]
    assert path.stat().st_mtime_ns != built
    np.testing.assert_allclose(got["0_0"].to_numpy(), t["0_0"].to_numpy())
    # same content written again (a rerun that changed nothing): content fingerprint, no rebuild
    rebuilt = path.stat().st_mtime_ns
    io.write_table(t, f, index=True)
    data.feature_tables(out)
    assert path.stat().st_mtime_ns == rebuilt
    # the expression file changed (size and modification time)
    time.sleep(0.01)
    tpm = io.read_gct(gct)
    tpm.iloc[0, :] = 500.0
    io.write_gct(tpm, gct, description=tpm.attrs["description"])
    e, _ = data.joined_log_expression(out, gct)
    assert path.stat().st_mtime_ns != rebuilt
    np.testing.assert_allclose(e.iloc[:, 0], np.log2(501.0), rtol=1e-6)
    # a truncated store is rebuilt, not trusted
    path.write_bytes(b"not hdf5")
    data.joined_log_expression(out, gct)
    assert ad.read_h5ad(path).shape == (6, 7)


def test_other_samples_table_bypasses_the_store(run_dir):
    out, gct = run_dir
    data.joined_log_expression(out, gct)
    _, samples = data.load_tiling(out)
    swapped = samples.copy()
    swapped["SAMPID"] = samples.SAMPID.iloc[::-1].to_numpy()  # another image -> sample mapping
    t = data.feature_tables(out, samples=swapped)[data.FeatureKey("trained", 256)]
    want = data.features_by_sample(data.load_features(out, "trained_256px"), swapped)
    pd.testing.assert_frame_equal(t, want)
