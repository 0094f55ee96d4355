"""Expression at real size: subset reads, float32 and the per-run cache of the joined samples."""
import os

import numpy as np
import pandas as pd
import pytest

from histo_utils import data, io


def _gct(path, n_genes=50, n_samples=12, seed=0):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(rng.gamma(0.5, 20.0, (n_genes, n_samples)).round(3),
                      index=pd.Index([f"ENSG{i:011d}.1" for i in range(n_genes)], name="Name"),
                      columns=[f"GTEX-{i:04d}-0011-R1a-SM-{i:04d}" for i in range(n_samples)])
    df.attrs["description"] = pd.Series([f"G{i}" for i in range(n_genes)], index=df.index)
    io.write_gct(df, path, float_format="%.6g")
    return df


def test_subset_read_equals_the_full_reads_columns_as_float32(tmp_path):
    truth = _gct(tmp_path / "tpm.gct.gz")
    full = io.read_gct(tmp_path / "tpm.gct.gz", dtype="float32")
    pick = list(truth.columns[[7, 2, 9]])  # not in file order: the requested order is kept
    sub = io.read_gct(tmp_path / "tpm.gct.gz", samples=pick, dtype="float32")
    assert list(sub.columns) == pick
    assert (sub.dtypes == np.float32).all() and (full.dtypes == np.float32).all()
    pd.testing.assert_frame_equal(sub, full[pick])
    np.testing.assert_allclose(full.to_numpy(), truth.to_numpy(), rtol=1e-6)
    assert list(sub.attrs["description"]) == list(truth.attrs["description"])
    assert (io.read_gct(tmp_path / "tpm.gct.gz").dtypes == np.float64).all()  # the default is unchanged


def test_float32_log_expression_is_within_float32_rounding_of_float64(tmp_path):
    _gct(tmp_path / "tpm.gct")
    e32, _ = data.load_log_expression(tmp_path / "tpm.gct")
    e64, _ = data.load_log_expression(tmp_path / "tpm.gct", dtype="float64")
    assert (e32.dtypes == np.float32).all()
    np.testing.assert_allclose(e32.to_numpy(np.float64), e64.to_numpy(), rtol=2e-7, atol=1e-6)


def test_cache_hit_miss_and_invalidation(tmp_path, monkeypatch):
    gct = tmp_path / "tpm.gct.gz"
    truth = _gct(gct)
    cache = tmp_path / "out" / "cache"
    pick = list(truth.columns[:4])
    first, sym = data.load_log_expression(gct, samples=pick, cache_dir=cache)
    files = sorted(cache.glob("expression.*.npz"))
    assert len(files) == 1 and not [p for p in cache.iterdir() if io.is_temporary(p)]

    calls = []
    real = io.read_gct
    monkeypatch.setattr(io, "read_gct", lambda *a, **k: calls.append(1) or real(*a, **k))
    hit, sym2 = data.load_log_expression(gct, samples=pick, cache_dir=cache)
    assert calls == []  # hit: the GCT is not read
    pd.testing.assert_frame_equal(hit, first)
    pd.testing.assert_series_equal(sym2, sym, check_names=False)
    assert hit.dtypes.eq(np.float32).all()

    data.load_log_expression(gct, samples=pick[:3], cache_dir=cache)  # another sample list: a miss
    assert calls == [1] and len(list(cache.glob("expression.*.npz"))) == 2

    changed = truth.copy()
    changed.iloc[0, 0] = 12345.0
    changed.attrs = truth.attrs
    io.write_gct(changed, gct, float_format="%.6g")
    os.utime(gct, ns=(files[0].stat().st_mtime_ns, files[0].stat().st_mtime_ns + 10**9))
    new, _ = data.load_log_expression(gct, samples=pick, cache_dir=cache)  # changed input: a miss
    assert calls == [1, 1]
    assert new.iloc[0, 0] == pytest.approx(np.log2(12346.0), rel=1e-6)


def test_non_numeric_value_still_named_with_the_fast_reader(tmp_path):
    p = tmp_path / "bad.gct"
    p.write_text("#1.2\n2\t2\nName\tDescription\tS1\tS2\nG1\tA\t1.0\t2.0\nG2\tB\tx7\t3.0\n")
    with pytest.raises(io.GCTError, match=r"'x7' of gene 'G2', sample 'S1'"):
        io.read_gct(p, samples=["S1"], dtype="float32")
