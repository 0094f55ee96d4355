"""The catalogue of feature tables (FeatureKey, feature_tables) and sample matching in histo_utils.data."""
import json

import numpy as np
import pandas as pd
import pytest

from histo_utils import data, io
from histo_utils.data import FeatureKey


@pytest.mark.parametrize("text, key", [
    ("trained_256px", FeatureKey("trained", 256, "sum")),
    ("untrained_512px_mean", FeatureKey("untrained", 512, "mean")),
    ("resnet_imagenet_1024px_median", FeatureKey("resnet_imagenet", 1024, "median")),
])
def test_key_parse_and_str_round_trip(text, key):
    assert FeatureKey.parse(text) == key
    assert str(key) == text
    assert FeatureKey.parse(str(key)) == key
    assert key.file_name == f"features_{key.network}_{key.tile_px}px.parquet"


def test_key_parse_with_aggregation_and_fields():
    assert FeatureKey.parse("trained_256px", aggregation="mean") == FeatureKey("trained", 256, "mean")
    assert str(FeatureKey.parse("trained_256px", aggregation="mean")) == "trained_256px_mean"
    assert FeatureKey("trained", np.int64(256)).fields() == {"network": "trained", "tile_px": 256,
                                                             "aggregation": "sum"}
    assert isinstance(FeatureKey("trained", np.int64(256)).tile_px, int)
    assert sorted([FeatureKey("u", 512), FeatureKey("t", 256)])[0] == FeatureKey("t", 256)
    with pytest.raises(AttributeError):
        FeatureKey("trained", 256).tile_px = 512  # frozen: a dict key


@pytest.mark.parametrize("text, message", [
    ("trained", "not understood: expected '<network>_<px>px'"),
    ("trained_256", "not understood"),
    ("trained_px", "not understood"),
    ("trained_256px_max", "Aggregation 'max' not available"),
])
def test_key_parse_rejects_with_the_fix(text, message):
    with pytest.raises(ValueError, match=message):
        FeatureKey.parse(text)


def test_key_validation():
    with pytest.raises(ValueError, match="Tile size 0 not valid"):
        FeatureKey("trained", 0)
    with pytest.raises(ValueError, match="Tile size '256' not valid"):
        FeatureKey("trained", "256")
    with pytest.raises(ValueError, match="Network name 'a b' not valid"):
        FeatureKey("a b", 256)
    with pytest.raises(ValueError, match="says aggregation 'mean' but 'sum'"):
        FeatureKey.parse("trained_256px_mean", aggregation="sum")


def _run(tmp_path, aggregation="sum", pxs=(256, 512)):
    """A run directory with notebook 01's samples and notebook 02's tables and provenance."""
    (tmp_path / "01_tiling").mkdir()
    (tmp_path / "02_training").mkdir()
    samples = pd.DataFrame({"image_id": ["I1", "I2", "I3"], "SAMPID": ["S1", "S2", "S3"],
                            "SMTS": ["Liver"] * 3, "split": ["train", "test", "test"]})
    io.write_table(samples, tmp_path / "01_tiling" / "samples.tsv")
    io.write_table(pd.DataFrame({"image_id": ["I1"], "x": [0]}), tmp_path / "01_tiling" / "tiles.parquet")
    prov = {"aggregation": aggregation, "tables": {}}
    rng = np.random.default_rng(0)
    for px in pxs:
        for net in ("trained", "untrained"):
            t = pd.DataFrame(rng.normal(size=(3, 4)), index=pd.Index(["I3", "I1", "I2"], name="image_id"),
                             columns=["0_0", "0_1", "1_0", "1_1"]) + px
            io.write_table(t, tmp_path / "02_training" / f"features_{net}_{px}px.parquet", index=True)
            prov["tables"][f"features_{net}_{px}px.parquet"] = {"network": net, "tile_px": px}
    (tmp_path / "02_training" / "features_provenance.json").write_text(json.dumps(prov))
    return tmp_path, samples


def test_feature_tables_read_the_provenance(tmp_path):
    out, samples = _run(tmp_path, aggregation="mean")
    keys = data.feature_keys(out)
    assert keys == [FeatureKey("trained", 256, "mean"), FeatureKey("untrained", 256, "mean"),
                    FeatureKey("trained", 512, "mean"), FeatureKey("untrained", 512, "mean")]
    tables = data.feature_tables(out)
    assert list(tables) == keys
    t = tables[FeatureKey("untrained", 512, "mean")]
    raw = io.read_table(out / "02_training" / "features_untrained_512px.parquet")
    assert t.index.name == "SAMPID" and list(t.index) == ["S3", "S1", "S2"]
    np.testing.assert_array_equal(t.to_numpy(), raw.to_numpy())
    # a subset by name: without a suffix the name matches whatever aggregation the run used
    sub = data.feature_tables(out, samples=samples, keys=["trained_512px"])
    assert list(sub) == [FeatureKey("trained", 512, "mean")]
    assert data.find_key(tables, "trained_256px") == FeatureKey("trained", 256, "mean")
    assert data.find_key(tables, "trained_256px_mean") == FeatureKey("trained", 256, "mean")
    with pytest.raises(ValueError, match=r"heatmap_table 'trained_256px_sum' not available\. Available: "
                                         r"\['trained_256px_mean'"):
        data.find_key(tables, "trained_256px_sum", what="heatmap_table")
    with pytest.raises(ValueError, match="'trained_1024px' not available"):
        data.feature_tables(out, keys=["trained_1024px"])


def test_feature_tables_explain_a_missing_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="run notebook 02_training first"):
        data.feature_keys(tmp_path)
    out, _ = _run(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"Available: \['features_trained_256px.parquet'.*feature_tile_px "
                                                r"including 1024"):
        data.load_features(out, "trained_1024px")
    (out / "02_training" / "features_provenance.json").write_text(json.dumps({"tables": {}}))
    with pytest.raises(ValueError, match=r"lacks \['aggregation'\]"):
        data.feature_keys(out)


def test_match_samples_reports_mismatch():
    a = pd.DataFrame(np.ones((3, 2)), index=["s1", "s2", "s3"])
    b = pd.DataFrame(np.ones((3, 2)), index=["s3", "s2", "s4"])
    with pytest.raises(ValueError, match="share 2 sample IDs; 1 only in features .*'s1'.*1 only in expression"):
        data.match_samples(a, b)
    fa, fb = data.match_samples(a, b, on_mismatch="intersect")
    assert list(fa.index) == list(fb.index) == ["s2", "s3"]
    with pytest.raises(ValueError, match="share no sample ID"):
        data.match_samples(a, b.set_axis(["x", "y", "z"]))
    with pytest.raises(ValueError, match="duplicated"):
        data.match_samples(a, b.set_axis(["s1", "s1", "s2"]))


def test_tissue_of_is_notebook_01s_grouping(tmp_path):
    """One tissue grouping per run: 04-09 take label_column and stop when it is not notebook 01's."""
    import pytest

    samples = pd.DataFrame({"SAMPID": ["A-1", "A-1", "B-1"], "image_id": ["a", "a2", "b"],
                            "SMTS": ["Heart", "Heart", "Heart"],
                            "SMTSD": ["Heart - Left Ventricle", "Heart - Left Ventricle", "Heart - Atrial Appendage"]})
    assert data.tissue_of(samples, "SMTSD").to_dict() == {"A-1": "Heart - Left Ventricle",
                                                          "B-1": "Heart - Atrial Appendage"}
    assert data.tissue_of(samples, "SMTS", out_dir=tmp_path).tolist() == ["Heart", "Heart"]  # no 01 record: taken
    data.write_tissue_grouping(tmp_path, "SMTSD")
    by_index = samples.drop_duplicates("SAMPID").set_index("SAMPID")
    assert data.tissue_of(by_index, "SMTSD", out_dir=tmp_path).index.tolist() == ["A-1", "B-1"]
    with pytest.raises(ValueError, match="grouped this run's samples by 'SMTSD'.*label_column 'SMTS'"):
        data.tissue_of(samples, "SMTS", out_dir=tmp_path)
    with pytest.raises(ValueError, match="label_column 'SMTSX' is not a column"):
        data.tissue_of(samples, "SMTSX")
