"""Tile datasets, training with resume, votes and accuracy tables."""
import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import binom

from histo_utils import models, tiling, training


@pytest.fixture(scope="module")
def tiny_tiles(tiny_cohort):
    """Tiles of the tiny cohort's slides with their tissue; two slides per tissue for training, one held out."""
    out, _ = tiny_cohort
    slides = tiling.list_slides(out / "slides")
    truth = pd.read_csv(out / "truth" / "samples.tsv", sep="\t").drop_duplicates("image_id")
    tiles, report = tiling.tile_slides(slides, params=tiling.TilingParams(tile_px=(256,)),
                                       cache_dir=out / "tiles_cache", workers=2, progress=False)
    tiles = tiles.merge(truth[["image_id", "SMTS"]], on="image_id")
    rank = tiles.drop_duplicates("image_id").groupby("SMTS").cumcount()
    held = set(tiles.drop_duplicates("image_id").image_id[rank.to_numpy() == 0])
    tiles["split"] = np.where(tiles.image_id.isin(held), "validation", "train")
    classes = sorted(tiles.SMTS.unique())
    labels = tiles.SMTS.map({c: i for i, c in enumerate(classes)}).to_numpy()
    ds = training.TileDataset(tiles, dict(zip(slides.image_id, slides.path)), input_px=64, labels=labels)
    return ds.preload(num_workers=2, progress=False), classes


def test_dataset_items_are_normalised_tiles(tiny_tiles):
    ds, _ = tiny_tiles
    x, y, i = ds[0]
    assert x.shape == (3, 64, 64) and x.dtype == torch.float32 and i == 0 and y >= 0
    # ImageNet normalisation of a mostly pink/white tile: values within the normalised 0..255 range
    assert -2.2 < float(x.min()) and float(x.max()) < 2.7
    raw = training.TileDataset(ds.tiles, ds.paths, input_px=64, labels=ds.labels)
    assert np.array_equal(raw.read_rgb(3), ds.read_rgb(3))  # on-the-fly read == preloaded
    sub = ds.subset([2, 0])
    assert sub.tiles.x.tolist() == ds.tiles.x.iloc[[2, 0]].tolist() and np.array_equal(sub.read_rgb(1), ds.read_rgb(0))


def test_tiny_training_beats_chance_on_held_out_slides(tiny_tiles, tmp_path):
    ds, classes = tiny_tiles
    tr = np.where(ds.tiles.split == "train")[0]
    va = np.where(ds.tiles.split == "validation")[0]
    torch.manual_seed(0)
    model = models.build_model("compact_bn", len(classes))  # the default profile's network
    cfg = training.TrainConfig(optimizer="adam", lr=1e-3, epochs=30, batch_size=8, seed=0)
    hist = training.train_classifier(model, ds.subset(tr), ds.subset(va), config=cfg, checkpoint_dir=tmp_path,
                                     progress=False)
    probs = training.predict_tiles(model, ds.subset(va), progress=False)
    correct = int((probs.argmax(1) == ds.labels[va]).sum())
    acc = correct / len(va)
    # clearly better than chance: a one-sided binomial test against guessing among the classes
    p_chance = binom.sf(correct - 1, len(va), 1 / len(classes))
    assert p_chance < 1e-3 and acc > 2 / len(classes), f"held-out tile accuracy {acc:.2f}, p = {p_chance:.2g}"
    assert hist.train_acc.iloc[-1] > 0.6  # it did learn its training tiles (chance 0.25)
    assert hist.val_acc.max() == pytest.approx(acc)  # best epoch's weights are the ones returned
    assert (tmp_path / "best.pt").exists() and (tmp_path / "last.pt").exists()


def test_resume_gives_the_same_final_state(tiny_tiles, tmp_path):
    ds, classes = tiny_tiles
    tr = np.where(ds.tiles.split == "train")[0][:48]
    va = np.where(ds.tiles.split == "validation")[0][:16]
    cfg = training.TrainConfig(optimizer="sgd", lr=0.01, epochs=3, batch_size=16, lr_step=2, seed=3)

    def fresh():
        torch.manual_seed(3)
        return models.build_model("compact", len(classes))
    a = fresh()
    ha = training.train_classifier(a, ds.subset(tr), ds.subset(va), config=cfg, checkpoint_dir=tmp_path / "a",
                                   progress=False)
    b = fresh()
    training.train_classifier(b, ds.subset(tr), ds.subset(va), config=cfg, checkpoint_dir=tmp_path / "b",
                              progress=False, stop_after=1)  # "killed" after one epoch
    b = fresh()
    hb = training.train_classifier(b, ds.subset(tr), ds.subset(va), config=cfg, checkpoint_dir=tmp_path / "b",
                                   progress=False)
    pd.testing.assert_frame_equal(ha, hb)
    last_a = torch.load(tmp_path / "a" / "last.pt", weights_only=False)["model"]
    last_b = torch.load(tmp_path / "b" / "last.pt", weights_only=False)["model"]
    assert all(torch.equal(last_a[k], last_b[k]) for k in last_a)
    # another configuration does not resume from it
    cfg2 = training.TrainConfig(optimizer="sgd", lr=0.02, epochs=1, batch_size=16, seed=3)
    h2 = training.train_classifier(fresh(), ds.subset(tr), ds.subset(va), config=cfg2,
                                   checkpoint_dir=tmp_path / "b", progress=False)
    assert h2.epoch.tolist() == [1]


def test_majority_vote_and_accuracy_tables():
    votes = training.slide_predictions(["s1", "s1", "s1", "s2", "s2"], [2, 2, 0, 1, 0])
    assert votes["s1"] == 2 and votes["s2"] == 0  # tie -> smallest class
    acc = training.accuracy_table(["A", "A", "B", "C"], ["A", "B", "B", "B"], level="slide", split="test")
    allrow = acc[acc["class"] == "(all)"].iloc[0]
    assert allrow.n == 4 and allrow.accuracy == 0.5
    assert acc.set_index("class").loc["C", "accuracy"] == 0.0
    merged = training.merge_classes(["Artery - Aorta", "Artery - Tibial", "Lung"], {"Artery": ["Artery - Aorta",
                                                                                              "Artery - Tibial"]})
    assert list(merged) == ["Artery", "Artery", "Lung"]


def test_sample_per_slide_is_seeded_and_bounded():
    t = pd.DataFrame({"image_id": np.repeat(["a", "b", "c"], 10), "split": ["train"] * 20 + ["test"] * 10})
    i1 = training.sample_per_slide(t, split="train", k=3, seed=1)
    assert len(i1) == 6 and set(t.image_id.iloc[i1]) == {"a", "b"}
    assert np.array_equal(i1, training.sample_per_slide(t, split="train", k=3, seed=1))
    assert len(training.sample_per_slide(t, split="test")) == 10
    with pytest.raises(ValueError, match=r"No tiles in split 'validation' \(\d+ tiles in splits \['test', 'train'\]\)"):
        training.sample_per_slide(t, split="validation")
    # an empty table: the grid is missing (01 did not make it), named with the parameters to change
    with pytest.raises(ValueError, match=r"no 256-px tiles at all.*Add 256 to 01's tile_px.*train_tile_px"):
        training.sample_per_slide(t.iloc[:0], split="train", tile_px=256)


def test_device_resolution():
    assert training.resolve_device("cpu").type == "cpu"
    assert training.resolve_device("auto").type in ("cpu", "cuda")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            training.resolve_device("cuda")


def test_selection_by_a_custom_score_with_plateau_and_early_stop(tiny_tiles, tmp_path):
    ds, classes = tiny_tiles
    tr = np.where(ds.tiles.split == "train")[0]
    va = np.where(ds.tiles.split == "validation")[0]
    scores = iter([0.2, 0.9, 0.1, 0.3, 0.4, 0.5, 0.6, 0.7])  # best at epoch 2, then never better

    def score(model, prob):
        assert prob.shape == (len(va), len(classes)) and np.allclose(prob.sum(1), 1, atol=1e-5)
        return next(scores)

    torch.manual_seed(0)
    model = models.build_model("compact", len(classes))
    cfg = training.TrainConfig(optimizer="adam", lr=1e-3, epochs=8, batch_size=8, seed=0, schedule="plateau",
                               lr_patience=1, gamma=0.5, early_stop=3)
    hist = training.train_classifier(model, ds.subset(tr), ds.subset(va), config=cfg, checkpoint_dir=tmp_path,
                                     progress=False, val_score=score)
    assert len(hist) == 5  # stopped three epochs after the best
    assert hist.best.tolist() == [True, True, False, False, False] and hist.val_score.max() == 0.9
    # the rate halves after two epochs without improvement (more than lr_patience = 1)
    assert hist.lr.tolist() == pytest.approx([1e-3, 1e-3, 1e-3, 1e-3, 5e-4])
    best = torch.load(tmp_path / "best.pt", weights_only=False)
    assert best["epoch"] == 1 and best["val_score"] == 0.9
    with pytest.raises(ValueError, match="schedule"):
        training.train_classifier(model, ds.subset(tr), ds.subset(va), config=training.TrainConfig(schedule="cosine"),
                                  checkpoint_dir=tmp_path / "x", progress=False)


def _synthetic_preloaded(n=37, px=16, seed=0):
    tiles = pd.DataFrame({"image_id": ["a"] * n, "x": range(n), "y": 0, "level": 0, "read_px": 2 * px})
    ds = training.TileDataset(tiles, {"a": "/nowhere.tif"}, input_px=px, labels=np.arange(n) % 3)
    ds._cache = np.random.default_rng(seed).integers(0, 256, (n, px, px, 3), dtype=np.uint8)
    return ds


@pytest.mark.parametrize("augment", [False, True])
def test_cached_batches_equal_the_dataloader(augment):
    """The preloaded fast path draws the same random numbers and gives the same batches as a DataLoader."""
    from torch.utils.data import DataLoader

    ds = _synthetic_preloaded().with_augmentation(augment)
    out = []
    for fast in (True, False):
        g = torch.Generator()
        g.manual_seed(5)
        torch.manual_seed(1)
        it = ds.batches(8, shuffle=True, generator=g) if fast else DataLoader(ds, batch_size=8, shuffle=True,
                                                                               generator=g)
        out.append(([b[0].clone() for b in it], torch.rand(3)))  # also the global random state after
    (xa, ra), (xb, rb) = out
    assert len(xa) == len(xb) == 5 and all(torch.equal(a, b) for a, b in zip(xa, xb)) and torch.equal(ra, rb)


def test_augment_batch_flips_and_jitters_each_tile_on_its_own():
    torch.manual_seed(0)
    x = torch.rand(64, 3, 8, 8)
    flipped = training.augment_batch(x, colour=False)
    # flips only: each tile is itself or one of its three flips, and both kinds occur across the batch
    kinds = []
    for a, b in zip(x, flipped):
        k = [torch.equal(b, f) for f in (a, a.flip(2), a.flip(1), a.flip(1).flip(2))]
        assert any(k)
        kinds.append(k.index(True))
    assert len(set(kinds)) == 4
    y = training.augment_batch(x)
    assert y.shape == x.shape and float(y.min()) >= 0 and float(y.max()) <= 1
    # per-tile factors: the mean brightness ratio differs between tiles of one batch
    same = torch.full((16, 3, 8, 8), 0.5)
    z = training.augment_batch(same)
    means = z.mean((1, 2, 3))
    assert float(means.std()) > 0.01
    # the hue rotation keeps grey grey (Y unchanged, I = Q = 0): no colour where there was none
    grey = torch.full((4, 3, 2, 2), 0.4)
    torch.manual_seed(1)
    g = training.augment_batch(grey)
    assert torch.allclose(g[:, 0], g[:, 1], atol=1e-5) and torch.allclose(g[:, 1], g[:, 2], atol=1e-5)
    with pytest.raises(ValueError, match="batch of RGB images"):
        training.augment_batch(torch.rand(3, 8, 8))


def test_batched_augmentation_needs_preloaded_tiles():
    ds = _synthetic_preloaded()
    ds._cache = None
    with pytest.raises(ValueError, match="call .preload"):
        next(ds.with_augmentation(True, batched=True).batches(4))


def test_read_mode_is_validated_and_carried_by_subsets():
    ds = _synthetic_preloaded()
    with pytest.raises(ValueError, match="level='coarse' not available"):
        training.TileDataset(ds.tiles, ds.paths, input_px=16, level="coarse")
    auto = training.TileDataset(ds.tiles, ds.paths, input_px=16, level="auto")
    assert auto.subset([0, 1]).level == "auto" and auto.read_key == {"input_px": 16, "read_level": "auto",
                                                           "resampling": tiling.TILE_RESAMPLING}


def test_table_names_of_several_networks():
    from histo_utils.data import FeatureKey

    assert training.table_network_name("compact", first=True) == "trained"
    assert training.table_network_name("compact", first=True, weights="untrained") == "untrained"
    name = training.table_network_name("timm:vit_small_patch16_224", first=False)
    assert name == "timm-vit_small_patch16_224-trained"
    key = FeatureKey(name, 256)
    assert FeatureKey.parse(key.name) == key  # the names survive the table file names


def test_two_architectures_train_on_the_same_tiles(tiny_tiles, tmp_path):
    ds, classes = tiny_tiles
    tr = np.where(ds.tiles.split == "train")[0][:48]
    va = np.where(ds.tiles.split == "validation")[0]
    cfg = training.TrainConfig(optimizer="adam", lr=1e-3, epochs=2, batch_size=16, seed=0)
    runs = training.train_networks(["compact", "compact_bn"], ds, train_idx=tr, val_idx=va[:16], eval_idx=va,
                                   classes=classes, config=cfg, checkpoint_root=tmp_path, progress=False)
    assert list(runs) == ["compact", "compact_bn"]
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in runs["compact_bn"].model.modules())
    for arch, r in runs.items():
        assert (tmp_path / arch / "best.pt").exists() and len(r.history) == 2
        assert len(r.tile_predictions) == len(va) and set(r.accuracy.arch) == {arch}
    tables = training.run_tables(runs)
    assert tables["accuracy"].groupby("arch").size().tolist() == [len(runs["compact"].accuracy)] * 2
    nets, arch_of = training.feature_networks(runs, n_classes=len(classes), seed=0)
    assert list(nets) == ["trained", "untrained", "compact_bn-trained"]
    assert arch_of == {"trained": "compact", "untrained": "compact", "compact_bn-trained": "compact_bn"}
    assert nets["trained"] is runs["compact"].model and nets["untrained"] is not nets["trained"]
    # a rerun resumes from the checkpoints: same histories, no training
    again = training.train_networks(["compact", "compact_bn"], ds, train_idx=tr, val_idx=va[:16], eval_idx=va,
                                    classes=classes, config=cfg, checkpoint_root=tmp_path, progress=False)
    pd.testing.assert_frame_equal(again["compact_bn"].history, runs["compact_bn"].history)
    with pytest.raises(ValueError, match="repeats"):
        training.train_networks(["compact", "compact"], ds, train_idx=tr, val_idx=va, eval_idx=va,
                                classes=classes, config=cfg, checkpoint_root=tmp_path)
    confusion = training.confusion_tables(runs, classes, split="validation")
    assert list(confusion) == ["compact tile", "compact slide", "compact_bn tile", "compact_bn slide"]
    assert int(confusion["compact tile"].to_numpy().sum()) == len(va)
