"""A dry run of the gtex profile's tiling step on a small directory in GTEx v8's own file layout."""
import shutil

import numpy as np
import pandas as pd
import pytest
import yaml

from histo_utils import io, run
from conftest import fixture_file

pytestmark = pytest.mark.slow


def test_gtex_profile_reads_a_gtex_v8_directory(tmp_path):
    subjects = fixture_file("gtex/GTEx_v7_Annotations_SubjectPhenotypesDS.txt")
    slide = fixture_file("slides/CMU-1-Small-Region.svs")
    d = tmp_path / "gtex"
    (d / "slides").mkdir(parents=True)
    # the real subject table under the v8 name; three of its donors get a skin sample each
    shutil.copy(subjects, d / "GTEx_Analysis_v8_Annotations_SubjectPhenotypesDS.txt")
    donors = pd.read_csv(subjects, sep="\t").SUBJID.iloc[:3].tolist()
    images = [f"{s}-2126" for s in donors]
    samples = [f"{i}-SM-{k}AB1C" for k, i in enumerate(images)]
    for i in images[:2]:  # the third image has RNA but no slide
        shutil.copy(slide, d / "slides" / f"{i}.svs")
    rng = np.random.default_rng(0)
    tpm = pd.DataFrame(rng.gamma(2, 5, (4, 3)), index=[f"ENSG0000011711{k}.9" for k in range(4)], columns=samples)
    io.write_gct(tpm, d / "GTEx_Analysis_2017-06-05_v8_RNASeQCv1.1.9_gene_tpm.gct.gz",
                 description=pd.Series([f"GENE{k}" for k in range(4)], index=tpm.index))
    attrs = pd.DataFrame({"SAMPID": samples, "SMATSSCR": [0, 1, 2], "SMCENTER": ["B1", "C1", "D1"],
                          "SMRIN": [7.1, 6.0, 8.2], "SMTS": "Skin", "SMTSD": "Skin - Sun Exposed (Lower leg)",
                          "SMUBRID": "0004264", "SMTSISCH": [-3, 600, 1200], "SMAFRZE": "RNASEQ"})
    io.write_table(attrs, d / "GTEx_Analysis_v8_Annotations_SampleAttributesDS.txt")
    prof = yaml.safe_load((run.PARAMS_DIR / "gtex.yaml").read_text())
    prof["common"]["data_dir"] = str(d)
    prof["common"]["workers"] = 1
    prof["common"].pop("device")  # declared by notebooks that are not run here
    prof["notebooks"] = {"01_tiling": {**prof["notebooks"]["01_tiling"], "split_fractions": [0.34, 0.33, 0.33]}}
    p = tmp_path / "gtex_dry.yaml"
    p.write_text(yaml.safe_dump(prof))
    out = tmp_path / "run"
    assert run.main(["--params", str(p), "--out", str(out)]) == 0
    slides = io.read_table(out / "01_tiling" / "slides.tsv")
    assert set(slides.image_id) == set(images[:2]) and (slides.status == "ok").all()
    assert np.allclose(slides.mpp, 0.499, atol=1e-3)
    tiles = io.read_table(out / "01_tiling" / "tiles.parquet")
    assert {256, 512} <= set(tiles.tile_px) <= {256, 512, 1024} and np.allclose(tiles.effective_mpp, 0.9884, rtol=0.02)
    report = io.read_table(out / "01_tiling" / "join_report.tsv")
    assert report.to_string().count(images[2]) >= 1  # RNA without a slide is reported
