"""Architectures, feature bookkeeping and the spatial aggregate."""
import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from histo_utils import features, models


def _channels(model, arch):
    layers = models.feature_layers(model, arch)
    x = torch.zeros(1, 3, models.input_size(arch), models.input_size(arch))
    model.eval()
    with features.LayerRecorder(layers) as rec, torch.no_grad():
        model(x)
        f = rec.collect()
    return layers, features.feature_names(rec.channels), f


def test_vgg16_has_badea_9920_features():
    m = models.build_model("vgg16", 39)
    layers, names, f = _channels(m, "vgg16")
    assert list(layers) == [str(i) for i in range(31)]
    assert len(names) == 9920 and f.shape == (1, 9920)
    assert names[0] == "0_0" and names[-1] == "30_511" and "29_499" in names
    assert len(set(names)) == len(names)


def test_resnet34_layers_are_not_skipped_over():
    m = models.build_model("resnet34", 5)
    layers = models.feature_layers(m, "resnet34")
    assert list(layers)[:4] == ["conv1", "bn1", "relu", "maxpool"] and list(layers)[-1] == "avgpool"
    blocks = [n for n in layers if n.startswith("layer")]
    assert len(blocks) == 3 + 4 + 6 + 3
    assert not any(n.count(".") > 1 for n in layers)  # nothing inside a residual block


def test_inception_v3_non_negative_elementary_layers_off_aux():
    m = models.build_model("inception_v3", 5)
    layers, names, f = _channels(m, "inception_v3")
    assert not any(n.startswith("AuxLogits") for n in layers)
    assert {"maxpool1", "maxpool2", "avgpool", "Conv2d_1a_3x3", "Mixed_7c.branch_pool"} <= set(layers)
    with torch.no_grad():
        m.eval()
        rec = features.LayerRecorder(layers)
        with rec:
            m(torch.randn(2, 3, 299, 299))
            assert (rec.collect() >= 0).all()  # ReLU and pooling outputs only


@pytest.mark.parametrize("arch", ["vgg16_1fc", "vgg16_avg1fc", "alexnet", "vgg11_bn", "compact", "compact_bn"])
def test_variants_build_and_classify(arch):
    m = models.build_model(arch, 7)
    m.eval()
    with torch.no_grad():
        out = m(torch.zeros(2, 3, 224, 224))
    assert out.shape == (2, 7)
    if arch == "vgg16_1fc":
        assert [type(x) for x in m.classifier] == [nn.Dropout, nn.Linear] and m.classifier[1].in_features == 25088
    if arch == "vgg16_avg1fc":
        assert m.classifier[1].in_features == 512


def test_unknown_architecture_and_missing_weights(tmp_path):
    with pytest.raises(ValueError, match="Architecture 'vgg17' not available"):
        models.build_model("vgg17", 3)
    with pytest.raises(FileNotFoundError, match="ImageNet weights are optional"):
        models.build_model("compact", 3, weights_path=tmp_path / "none.pth")


def test_local_weights_load_backbone_only(tmp_path):
    src = models.build_model("compact", 10)
    torch.save(src.state_dict(), tmp_path / "w.pth")
    dst = models.build_model("compact", 3, weights_path=tmp_path / "w.pth")
    assert torch.equal(dst.features[0].weight, src.features[0].weight)
    assert dst.classifier[-1].out_features == 3  # the mismatched classifier keeps its own weights


def test_spatial_aggregate_against_hand_computation():
    y = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[-1.0, 0.0], [0.0, 1.0]]]])  # (1, 2, 2, 2)
    assert torch.allclose(features.spatial_aggregate(y, 1), torch.tensor([[2.5, 0.0]]))
    assert torch.allclose(features.spatial_aggregate(y, 2), torch.tensor([[7.5, 0.5]]))
    assert torch.allclose(features.spatial_aggregate(y, 0.5),
                          torch.tensor([[(1 + 2 ** 0.5 + 3 ** 0.5 + 2) / 4, 0.0]]))
    with pytest.raises(ValueError, match="p must be positive"):
        features.spatial_aggregate(y, 0)


def test_hooks_record_before_inplace_relu_and_are_removed():
    conv = nn.Conv2d(1, 1, 1, bias=False)
    conv.weight.data.fill_(-1.0)
    net = nn.Sequential(conv, nn.ReLU(inplace=True))
    rec = features.LayerRecorder({"0": net[0], "1": net[1]})
    with rec:
        net(torch.ones(1, 1, 3, 3))
        f = rec.collect()
    assert f.tolist() == [[-1.0, 0.0]]  # conv output kept as it was before the in-place ReLU
    assert not net[0]._forward_hooks and not net[1]._forward_hooks


def test_slide_aggregation():
    f = np.array([[1.0, 10.0], [3.0, 30.0], [5.0, 50.0], [7.0, 0.0]])
    ids = ["b", "a", "a", "b"]
    s = features.aggregate_slides(f, ids, how="sum")
    assert s.loc["a"].tolist() == [8.0, 80.0] and s.loc["b"].tolist() == [8.0, 10.0]
    assert features.aggregate_slides(f, ids, how="mean").loc["a"].tolist() == [4.0, 40.0]
    assert features.aggregate_slides(f, ids, how="median").loc["b"].tolist() == [4.0, 5.0]
    with pytest.raises(ValueError, match="how must be"):
        features.aggregate_slides(f, ids, how="max")


def test_layer_program_correlation_finds_planted_channel_and_null_is_lower():
    rng = np.random.default_rng(0)
    n = 60
    tissue = np.repeat(["A", "B", "C"], 20)
    prog = pd.DataFrame({"program_x": rng.normal(size=n)}, index=[f"s{i}" for i in range(n)])
    noise = rng.normal(size=(n, 6))
    offset = np.select([tissue == "A", tissue == "B"], [5.0, -3.0], 0.0)[:, None]
    feats = pd.DataFrame(noise + offset, index=prog.index, columns=["0_0", "0_1", "0_2", "1_0", "1_1", "1_2"])
    feats["1_1"] = prog.program_x * 2 + 0.3 * rng.normal(size=n) + offset[:, 0] * 10  # tissue offset + signal
    lp = features.layer_program_correlation(feats, prog, tissue)
    best = lp.set_index("layer").loc["1"]
    assert best.feature == "1_1" and best.r > 0.9
    null = features.layer_program_correlation(feats, prog, tissue, permute_seed=1)
    assert null.abs_r.max() < 0.6


def test_compact_bn_is_compact_with_batch_norm_after_every_conv():
    plain, bn = models.build_model("compact", 5), models.build_model("compact_bn", 5)
    convs = [m for m in plain.features if isinstance(m, nn.Conv2d)]
    seq = list(bn.features)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in plain.features)
    # conv -> BN -> ReLU for each of the 8 convolutions, same widths as compact
    for i, m in enumerate(seq):
        if isinstance(m, nn.Conv2d):
            assert isinstance(seq[i + 1], nn.BatchNorm2d) and seq[i + 1].num_features == m.out_channels
            assert isinstance(seq[i + 2], nn.ReLU)
    assert [m.out_channels for m in seq if isinstance(m, nn.Conv2d)] == [m.out_channels for m in convs]
    _, names_plain, _ = _channels(plain, "compact")
    _, names_bn, f = _channels(bn, "compact_bn")
    assert len(names_plain) == 5 * (16 + 32 + 64 + 128) and len(names_bn) == 7 * (16 + 32 + 64 + 128)
    assert f.shape == (1, len(names_bn))


def test_feature_cache_is_keyed_on_the_read_mode():
    m = models.build_model("compact", 3)
    layers = models.feature_layers(m, "compact")
    k_table = features.network_key(m, layers, how="sum", p=1.0, batch_size=8, input_px=64)
    k_auto = features.network_key(m, layers, how="sum", p=1.0, batch_size=8, input_px=64, read_level="auto")
    assert k_table != k_auto
