"""Slide x feature tables as AnnData: what a scanpy user opens must be the parquet table, with its samples."""
import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from histo_utils import features
from histo_utils.data import FeatureKey


def _tables():
    rng = np.random.default_rng(3)
    ids = ["GTEX-A-01", "GTEX-B-02", "GTEX-C-03"]
    cols = [f"{layer}_{c}" for layer, n in (("layer1", 2), ("layer4_1", 3)) for c in range(n)]
    t1 = pd.DataFrame(rng.normal(size=(3, 5)), index=pd.Index(ids, name="image_id"), columns=cols)
    t2 = t1.iloc[[2, 0]] * 2  # another network, a subset of slides in another order
    return {FeatureKey("trained", 256): t1, FeatureKey("untrained", 512, "mean"): t2}


def _samples():
    return pd.DataFrame({"image_id": ["GTEX-C-03", "GTEX-A-01", "GTEX-B-02", "GTEX-Z-09"],
                         "SAMPID": ["s3", "s1", "s2", "s9"], "subject_id": ["C", "A", "B", "Z"],
                         "SMTS": ["Liver", "Thyroid", "Liver", "Muscle"], "split": ["test", "train", "train", "val"],
                         "SMRIN": [7.1, 6.5, 8.0, 9.0], "SMTSISCH": [300, 120, 60, 30], "path": ["x"] * 4})


def test_h5ad_holds_the_table_its_samples_and_feature_names(tmp_path):
    tables = _tables()
    written = features.write_feature_h5ad(tables, _samples(), tmp_path, provenance={"arch": "resnet18", "p": 1.0})
    # beside each parquet table, under its stem (FeatureKey.file_name)
    assert [p.name for p in written] == ["features_trained_256px.h5ad", "features_untrained_512px.h5ad"]
    assert [p.stem for p in written] == [k.file_name.removesuffix(".parquet") for k in tables]
    assert not list(tmp_path.glob(".*.tmp"))
    for key, path in zip(tables, written):
        table = tables[key]
        a = ad.read_h5ad(path)
        assert a.shape == table.shape
        assert list(a.obs_names) == list(table.index) and list(a.var_names) == list(table.columns)
        np.testing.assert_allclose(a.X, table.to_numpy(), rtol=1e-6)
        s = _samples().set_index("image_id").loc[table.index]
        assert list(a.obs.SMTS) == list(s.SMTS) and list(a.obs.split) == list(s.split)
        assert list(a.obs.SAMPID) == list(s.SAMPID) and list(a.obs.subject_id) == list(s.subject_id)
        np.testing.assert_allclose(a.obs.SMRIN, s.SMRIN)
        assert "path" not in a.obs  # machine-specific paths stay out
        assert list(a.var.layer) == ["layer1"] * 2 + ["layer4_1"] * 3
        assert list(a.var.channel) == [0, 1, 0, 1, 2]
        assert set(a.var.network) == {key.network} and set(a.var.tile_px) == {key.tile_px}
        assert set(a.var.aggregation) == {key.aggregation}
        assert a.uns["feature_key"] == str(key)
        assert json.loads(a.uns["provenance_json"]) == {"arch": "resnet18", "p": 1.0}


def test_h5ad_refuses_slides_missing_from_samples(tmp_path):
    with pytest.raises(ValueError, match="not in samples"):
        features.write_feature_h5ad(_tables(), _samples().iloc[:2], tmp_path)
