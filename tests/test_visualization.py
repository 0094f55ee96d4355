"""Guided backpropagation, activation maximisation, the representative-tile rules, localisation AUROC."""
import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from histo_utils import models
from histo_utils import visualization as vz


def _tiny_net():
    """conv(1x1, 3 -> 2) - ReLU - conv(1x1, 2 -> 1): known weights."""
    net = nn.Sequential(nn.Conv2d(3, 2, 1), nn.ReLU(inplace=True), nn.Conv2d(2, 1, 1))
    with torch.no_grad():
        net[0].weight[:] = torch.tensor([[1.0, -1.0, 0.0], [0.5, 0.5, 0.5]]).view(2, 3, 1, 1)
        net[0].bias[:] = 0.0
        net[2].weight[:] = torch.tensor([2.0, -3.0]).view(1, 2, 1, 1)
        net[2].bias[:] = 0.0
    return net


def test_guided_backprop_by_hand():
    net = _tiny_net()
    x = torch.tensor([[1.0, 0.0], [-1.0, 2.0]])  # pixel (0,0): (1, -1, 2); pixel (0,1): ... per channel
    img = torch.stack([x, -x, 2 * x.abs()]).unsqueeze(0)  # (1, 3, 2, 2)
    g = vz.guided_backprop(net, net[2], 0, img)[0]
    # feature = mean over 4 pixels of 2*h1 - 3*h2, h = relu(W x); at a pixel, d f/d h = (2, -3) / 4.
    # Guided: the negative incoming gradient (-3/4 to h2) is zeroed; h1 passes where its input > 0.
    w1 = np.array([1.0, -1.0, 0.0])
    expected = np.zeros((3, 2, 2))
    for i in range(2):
        for j in range(2):
            pix = img[0, :, i, j].numpy()
            if w1 @ pix > 0:
                expected[:, i, j] = (2 / 4) * w1 * (2 / 4 > 0)
    np.testing.assert_allclose(g, expected, atol=1e-7)
    assert net[1].inplace  # restored
    assert not net[1]._backward_hooks and not net[2]._forward_hooks  # no state leaks


def test_guided_backprop_vgg16_and_compact_leave_no_hooks():
    for arch, size in (("compact", 64), ("vgg16", 64)):
        m = models.build_model(arch, 3)
        layers = models.feature_layers(m, arch)
        name = list(layers)[3]
        g = vz.guided_backprop(m, layers[name], 1, torch.randn(2, 3, size, size))
        assert g.shape == (2, 3, size, size) and np.isfinite(g).all()
        assert all(not mod._forward_hooks and not mod._backward_hooks for mod in m.modules())
        assert all(r.inplace for r in m.modules() if isinstance(r, nn.ReLU))  # restored after gBP


def test_activation_maximization_increases_the_feature():
    torch.manual_seed(0)
    m = models.build_model("compact", 3)
    layers = models.feature_layers(m, "compact")
    module, ch = vz.feature_channel("3_5", layers)
    img, hist = vz.activation_maximization(m, module, ch, size=48, steps=40, lr=0.1, seed=1)
    assert img.shape == (48, 48, 3) and img.dtype == np.uint8
    assert hist[-1] > hist[0] + 1e-6
    img2, hist2 = vz.activation_maximization(m, module, ch, size=48, steps=40, lr=0.1, seed=1)
    np.testing.assert_array_equal(img, img2)  # seeded
    with pytest.raises(ValueError, match="Layer '99' of feature '99_1' not available"):
        vz.feature_channel("99_1", layers)


def test_representative_tiles_follow_the_rules():
    t = pd.DataFrame({"image_id": ["a", "a", "a", "b", "c", "d"], "subject_id": ["s1", "s1", "s1", "s1", "s2", "s3"],
                      "x": [0, 10, 1000, 0, 0, 0], "y": [0, 0, 0, 0, 0, 0]})
    v = [10.0, 9.5, 9.0, 8.0, 2.0, 1.0]
    one = vz.select_representative_tiles(t, v, k=3, top_fraction=1.0, per_subject=1)
    assert list(one.subject_id) == ["s1", "s2", "s3"]  # spread over donors despite s1's higher values
    two = vz.select_representative_tiles(t, v, k=3, top_fraction=1.0, per_subject=3, min_distance_px=100)
    assert list(two.x) == [0, 1000, 0] and list(two.image_id) == ["a", "a", "b"]  # the near-duplicate skipped
    top = vz.select_representative_tiles(t, v, k=3, top_fraction=0.5, per_subject=1)
    assert list(top.subject_id) == ["s1"]  # only the top half are candidates, all from s1


def test_localisation_auroc():
    mask = np.zeros((10, 10), bool)
    mask[:3] = True
    assert vz.localisation_auroc(mask.astype(float), mask) == 1.0
    assert vz.localisation_auroc(-mask.astype(float), mask) == 0.0
    rng = np.random.default_rng(0)
    assert abs(vz.localisation_auroc(rng.random((200, 200)), rng.random((200, 200)) > 0.5) - 0.5) < 0.01
    assert np.isnan(vz.localisation_auroc(np.ones(4), np.ones(4, bool)))


def test_choose_features_spreads_over_bands_and_alternates_scans():
    cand = pd.DataFrame({"feature": ["l1_0", "l1_1", "l2_0", "l3_0", "l3_1", "l4_0"],
                         "layer": ["l1", "l1", "l2", "l3", "l3", "l4"],
                         "scan": ["pooled", "within tissue", "pooled", "within tissue", "pooled", "pooled"],
                         "abs_r": [0.9, 0.5, 0.7, 0.95, 0.6, 0.4], "gene": "g", "r": 0.5})
    layers = {name: nn.Identity() for name in ["l1", "l2", "l3", "l4"]}
    chosen = vz.choose_features(cand, layers, n_features=2)
    # band 0 (l1, l2) prefers within tissue: l1_1 despite l1_0's larger |r|; band 1 (l3, l4) prefers pooled
    assert chosen.feature.tolist() == ["l1_1", "l3_1"]
    named = vz.choose_features(cand, layers, named=["l3_0", "l4_9"])
    assert named.feature.tolist() == ["l3_0", "l4_9"] and np.isnan(named.abs_r.iloc[1])
    with pytest.raises(ValueError, match="Layer 'l9' of feature 'l9_9' not available"):
        vz.choose_features(cand, layers, named=["l9_9"])
    pooled = pd.DataFrame({"feature": ["a", "b"], "r": [-0.5, 0.2], "perm_p": [0.01, np.nan]})
    both = vz.candidate_pairs(pd.DataFrame({"feature": ["c"], "r": [0.3]}), pooled)
    assert both.feature.tolist() == ["c", "a"] and both.abs_r.tolist() == [0.3, 0.5]
    symbols = pd.Series({"ENSG1": "ABC"})
    assert vz.find_gene("ABC", pd.DataFrame({"gene": ["ENSG1"]}), symbols) == "ENSG1"
    with pytest.raises(ValueError, match="no pair"):
        vz.find_gene("XYZ", pd.DataFrame({"gene": ["ENSG1"]}), symbols)


def test_gbp_rgb_and_sample_tiles():
    g = np.zeros((3, 2, 2))
    g[0, 0, 0], g[1, 1, 1] = 2.0, -1.0
    rgb = vz.gbp_rgb(g)
    assert rgb.shape == (2, 2, 3) and rgb[0, 0, 0] == pytest.approx(1.0) and rgb.min() == 0.0
    tiles = pd.DataFrame({"image_id": ["a"] * 10 + ["b"] * 10, "tissue_fraction": [1.0] * 18 + [0.5] * 2})
    pick = vz.sample_tiles(tiles, 6, seed=0)
    assert len(pick) == 6 and pick.image_id.is_monotonic_increasing and (pick.tissue_fraction >= 0.9).all()
    assert pick.index.tolist() == vz.sample_tiles(tiles, 6, seed=0).index.tolist()


def test_tile_feature_values_match_the_channel_hook():
    from histo_utils.training import TileDataset  # noqa: F401  (the dataset protocol: (x, label, index))

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 5, 3), nn.ReLU())
    layers = {"c1": net[1], "c2": net[3]}
    data = [(torch.randn(3, 12, 12), 0, i) for i in range(7)]
    vals = vz.tile_feature_values(net, data, layers, ["c2_3", "c1_0"], batch_size=3)
    assert vals.shape == (7, 2) and list(vals.columns) == ["c2_3", "c1_0"]
    np.testing.assert_allclose(vals["c2_3"], vz.channel_values(net, net[3], 3, data, batch_size=3), rtol=1e-6)
    direct = net(torch.stack([d[0] for d in data]))[:, 3].mean((1, 2)).detach().numpy()
    np.testing.assert_allclose(vals["c2_3"], direct, rtol=1e-5)


def test_interior_tiles_drop_slide_and_tissue_edges():
    # slide a: a 4 x 4 grid of tiles (size0 10); only the 4 centre tiles have all 8 neighbours
    xs, ys = np.meshgrid(np.arange(4) * 10, np.arange(4) * 10)
    a = pd.DataFrame({"image_id": "a", "tile_px": 256, "x": xs.ravel(), "y": ys.ravel(), "size0": 10,
                      "tissue_fraction": 1.0})
    a.loc[(a.x == 10) & (a.y == 20), "tissue_fraction"] = 0.5  # a centre tile mostly glass
    b = a.assign(image_id="b", tile_px=512).iloc[[5]]  # same place, another slide and grid: no neighbours
    tiles = pd.concat([a, b], ignore_index=True).set_index(np.arange(100, 117))
    inner = vz.interior_tiles(tiles)
    assert sorted(zip(inner.x, inner.y)) == [(10, 10), (20, 10), (20, 20)]
    assert set(inner.index) <= set(tiles.index) and (inner.image_id == "a").all()
    assert len(vz.interior_tiles(tiles, min_tissue=0.4)) == 4
    with pytest.raises(ValueError, match="missing \\['size0'\\]"):
        vz.interior_tiles(tiles.drop(columns="size0"))


def test_feature_maps_are_the_channel_outputs():
    net = nn.Sequential(nn.Conv2d(3, 2, 1), nn.ReLU(), nn.MaxPool2d(2))
    with torch.no_grad():
        net[0].weight[:] = torch.tensor([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0]]).view(2, 3, 1, 1)
        net[0].bias[:] = 0.0
    layers = {"0": net[0], "2": net[2]}
    x = torch.randn(3, 3, 8, 8)
    maps = vz.feature_maps(net, layers, ["0_0", "0_1", "2_1"], x)
    assert maps.shape == (3, 3, 8, 8)
    np.testing.assert_allclose(maps[0], x[:, 0].numpy(), atol=1e-6)  # same size: the channel itself
    np.testing.assert_allclose(maps[1], -x[:, 1].numpy(), atol=1e-6)
    pooled = nn.functional.max_pool2d(torch.relu(-x[:, 1:2]), 2)[:, 0].numpy()  # (3, 4, 4), upsampled to 8 x 8
    np.testing.assert_allclose(maps[2][:, ::2, ::2].mean(), pooled.mean(), rtol=0.2)
    assert maps[2].max() <= pooled.max() + 1e-6 and not net[0]._forward_hooks and not net[2]._forward_hooks


def test_representative_tiles_keep_the_dataset_index():
    t = pd.DataFrame({"image_id": ["a", "b", "c"], "subject_id": ["s1", "s2", "s3"], "x": 0, "y": 0},
                     index=[7, 3, 11])
    rep = vz.select_representative_tiles(t, [1.0, 3.0, 2.0], k=2, top_fraction=1.0)
    assert rep.index.tolist() == [3, 11] and rep.value.tolist() == [3.0, 2.0]


def test_interior_tiles_fall_back_to_the_most_surrounded_on_small_slides():
    xs, ys = np.meshgrid(np.arange(3) * 10, np.arange(2) * 10)  # 3 x 2 grid: no tile has 8 neighbours
    t = pd.DataFrame({"image_id": "a", "tile_px": 256, "x": xs.ravel(), "y": ys.ravel(), "size0": 10,
                      "tissue_fraction": 1.0})
    inner = vz.interior_tiles(t)
    assert sorted(inner.x) == [10, 10]  # the middle column: 5 neighbours each


def test_channel_values_and_maps_see_a_conv_before_its_in_place_relu():
    """A conv followed by ReLU(inplace=True): the feature is the conv's output, negative values included."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(4, 2, 1))
    layers = {"0": net[0], "1": net[1]}
    data = [(torch.randn(3, 8, 8), 0, i) for i in range(5)]
    x = torch.stack([d[0] for d in data])
    with torch.no_grad():
        pre = net[0](x)  # the conv output before the ReLU
    vals = vz.tile_feature_values(net, data, layers, ["0_2"])["0_2"].to_numpy()
    np.testing.assert_allclose(vals, pre[:, 2].mean((1, 2)).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(vz.channel_values(net, net[0], 2, data), vals, rtol=1e-5, atol=1e-6)
    maps = vz.feature_maps(net, layers, ["0_2"], x)[0]
    assert (maps < 0).any()  # not overwritten by the ReLU
    np.testing.assert_allclose(maps, pre[:, 2].numpy(), atol=1e-6)


def _full_forward_outputs(model, modules, x):
    """Reference for vz._layer_outputs: the whole network runs, outputs cloned by plain hooks."""
    out, handles = {}, [m.register_forward_hook(lambda mod, i, o: out.__setitem__(id(mod), o.clone()))
                        for m in modules]
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    return out


def test_forward_stops_after_the_feature_layer_with_the_same_values():
    torch.manual_seed(0)
    m = models.build_model("compact", 3).eval()
    layers = models.feature_layers(m, "compact")
    x = torch.randn(2, 3, 32, 32)
    ran = []
    m.classifier.register_forward_hook(lambda *a: ran.append("classifier"))
    m.features[10].register_forward_hook(lambda *a: ran.append("10"))
    with torch.no_grad():
        fast = vz._feature_value(m, layers["4"], 3, x)
        assert ran == []  # nothing after layer 4 ran
        ref = _full_forward_outputs(m, [layers["4"]], x)[id(layers["4"])][:, 3].mean((1, 2))
    torch.testing.assert_close(fast, ref, rtol=0, atol=0)
    with pytest.raises(ValueError, match="Channel 99 not available"):
        vz._feature_value(m, layers["4"], 99, x)


def test_activation_maximization_with_the_stopped_forward_equals_the_full_forward(monkeypatch):
    """The ascent's images and history are those of running the whole network at every step."""
    m = models.build_model("compact", 3)
    layers = models.feature_layers(m, "compact")
    kw = dict(size=32, steps=12, lr=0.1, seed=2)
    fast = [vz.activation_maximization(m, *vz.feature_channel(f, layers), **kw) for f in ("1_5", "9_7")]
    monkeypatch.setattr(vz, "_layer_outputs", _full_forward_outputs)
    for (img, hist), f in zip(fast, ("1_5", "9_7")):
        img_ref, hist_ref = vz.activation_maximization(m, *vz.feature_channel(f, layers), **kw)
        np.testing.assert_array_equal(img, img_ref)
        np.testing.assert_array_equal(hist, hist_ref)


def test_guided_backprop_of_several_features_equals_one_at_a_time():
    """One forward pass shared by the features (ReLU, conv, pooling and last layers; two in one layer)."""
    torch.manual_seed(0)
    m = models.build_model("compact", 3)
    layers = models.feature_layers(m, "compact")
    feats = ["19_11", "1_5", "0_3", "4_2", "15_34", "15_7"]
    x = torch.randn(3, 3, 32, 32)
    many = vz.guided_backprop_features(m, layers, feats, x)
    assert many.shape == (len(feats), 3, 3, 32, 32)
    for k, f in enumerate(feats):
        one = vz.guided_backprop(m, *vz.feature_channel(f, layers), x)
        np.testing.assert_allclose(many[k], one, rtol=0, atol=1e-7)
        assert np.abs(one).max() > 0
    np.testing.assert_allclose(vz.guided_backprop_features(m, layers, feats[:2], x, reduce="abs_sum"),
                               np.abs(many[:2]).sum(2), atol=1e-7)
    assert all(not mod._forward_hooks and not mod._backward_hooks for mod in m.modules())
    assert all(r.inplace for r in m.modules() if isinstance(r, nn.ReLU))


def test_tile_feature_values_of_every_channel_in_one_pass():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 5, 3), nn.ReLU())
    layers = {"c1": net[1], "c2": net[3]}
    data = [(torch.randn(3, 12, 12), 0, i) for i in range(7)]
    every = vz.tile_feature_values(net, data, layers, batch_size=3)
    assert list(every.columns) == [f"c1_{c}" for c in range(4)] + [f"c2_{c}" for c in range(5)]
    pd.testing.assert_frame_equal(every[["c2_3", "c1_0"]], vz.tile_feature_values(net, data, layers, ["c2_3", "c1_0"],
                                                                                  batch_size=3))
    np.testing.assert_allclose(every["c1_2"], vz.channel_values(net, net[1], 2, data, batch_size=3), rtol=1e-6)
