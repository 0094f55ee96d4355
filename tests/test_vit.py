"""Foundation-model encoders through timm: local weights, token features, frozen mode (issue 21.1)."""
import numpy as np
import pandas as pd
import pytest
import torch

timm = pytest.importorskip("timm")

from histo_utils import features, models, training  # noqa: E402

ARCH = "timm:vit_tiny_patch16_224"


def _tiny_vit(depth=2, img_size=64, seed=0, **kw):
    torch.manual_seed(seed)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, depth=depth,
                             img_size=img_size, **kw).eval()


@pytest.fixture
def weights(tmp_path):
    src = _tiny_vit()
    path = tmp_path / "encoder.pt"
    torch.save(src.state_dict(), path)
    return src, path


def test_vit_loads_local_weights_and_its_features_are_block_token_means_and_cls(weights):
    src, path = weights
    net = models.build_model(ARCH, 4, weights_path=path).eval()
    assert len(net.blocks) == 2 and net.num_classes == 4  # depth read from the file, a new 4-class head
    layers = models.feature_layers(net, ARCH)
    assert list(layers) == ["blocks.0", "blocks.1", "cls"]
    x = torch.randn(3, 3, 96, 96)  # another input size than the checkpoint's 64: position embedding interpolated
    with torch.no_grad(), features.LayerRecorder(layers) as rec:
        net(x)
        f = rec.collect()
    assert rec.channels == {"blocks.0": 192, "blocks.1": 192, "cls": 192}
    names = features.feature_names(rec.channels)
    assert names[0] == "blocks.0_0" and names[-1] == "cls_191"
    src_dyn = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, depth=2, img_size=64,
                                dynamic_img_size=True).eval()
    src_dyn.load_state_dict(src.state_dict())
    with torch.no_grad():
        tokens = src_dyn._pos_embed(src_dyn.patch_embed(x))
        b0 = src_dyn.blocks[0](tokens)
        b1 = src_dyn.blocks[1](b0)
        cls = src_dyn.norm(b1)[:, 0]
    assert tokens.shape[1] == 1 + 36  # 6x6 patches + the class token
    np.testing.assert_allclose(f[:, :192], b0[:, 1:].mean(1), rtol=1e-5, atol=1e-5)  # class token left out
    np.testing.assert_allclose(f[:, 192:384], b1[:, 1:].mean(1), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(f[:, 384:], cls, rtol=1e-5, atol=1e-5)
    assert not np.allclose(f[:, 192:384], b1.mean(1))  # including the class token would differ


def test_token_aggregate_exponent_and_prefix():
    y = torch.tensor([[[9.0, -1.0], [1.0, 2.0], [3.0, -2.0]]])  # 1 image, class token + 2 patch tokens, 2 dims
    np.testing.assert_allclose(features.token_aggregate(y, ("patch_mean", 1)), [[2.0, 0.0]])
    np.testing.assert_allclose(features.token_aggregate(y, ("patch_mean", 1), p=2), [[5.0, 4.0]])
    np.testing.assert_allclose(features.token_aggregate(y, ("cls", 0)), [[9.0, -1.0]])
    with pytest.raises(ValueError, match="batch, tokens, dim"):
        features.token_aggregate(y[0], ("cls", 0))


def test_missing_or_mismatching_weights_name_the_file_and_the_fix(weights, tmp_path):
    _, path = weights
    with pytest.raises(FileNotFoundError, match=r"nope\.pt.*README"):
        models.build_model(ARCH, 4, weights_path=tmp_path / "nope.pt")
    with pytest.raises(ValueError, match=r"encoder\.pt' does not fit timm:vit_small_patch16_224.*of another shape"):
        models.build_model("timm:vit_small_patch16_224", 4, weights_path=path)  # 384-wide, file 192
    broken = {k: v for k, v in torch.load(path).items() if not k.startswith("blocks.1.mlp")}
    torch.save(broken, tmp_path / "broken.pt")
    with pytest.raises(ValueError, match=r"4 backbone tensors missing.*blocks\.1\.mlp"):
        models.build_model(ARCH, 4, weights_path=tmp_path / "broken.pt")
    with pytest.raises(ValueError, match="not available in timm"):
        models.build_model("timm:no_such_vit", 4)


def test_shape_options_read_from_the_checkpoint():
    uni_like = _tiny_vit(depth=3, img_size=32, init_values=1e-5, reg_tokens=2).state_dict()
    kw = models.timm_kwargs_from_state(uni_like)
    assert kw == {"depth": 3, "init_values": 1e-5, "reg_tokens": 2, "class_token": True, "img_size": 32}


def test_random_weights_keep_the_shape_not_the_values(weights):
    src, path = weights
    torch.manual_seed(5)
    ref = models.build_model(ARCH, 4, weights_path=path, random_weights=True)
    loaded = models.build_model(ARCH, 4, weights_path=path)
    assert len(ref.blocks) == 2
    assert not torch.equal(ref.blocks[0].attn.qkv.weight, loaded.blocks[0].attn.qkv.weight)
    assert torch.equal(loaded.blocks[0].attn.qkv.weight, src.blocks[0].attn.qkv.weight)


def _hf_names(state):
    """A timm ViT state_dict in Hugging Face ``ViTModel`` names (Phikon's layout), split qkv included."""
    out = {"embeddings.cls_token": state["cls_token"], "embeddings.position_embeddings": state["pos_embed"],
           "embeddings.patch_embeddings.projection.weight": state["patch_embed.proj.weight"],
           "embeddings.patch_embeddings.projection.bias": state["patch_embed.proj.bias"],
           "layernorm.weight": state["norm.weight"], "layernorm.bias": state["norm.bias"],
           "pooler.dense.weight": torch.zeros(192, 192), "pooler.dense.bias": torch.zeros(192)}
    for i in range(2):
        b, h = f"blocks.{i}.", f"encoder.layer.{i}."
        for t in ("weight", "bias"):
            q, k, v = state[f"{b}attn.qkv.{t}"].chunk(3)
            out |= {f"{h}attention.attention.query.{t}": q, f"{h}attention.attention.key.{t}": k,
                    f"{h}attention.attention.value.{t}": v,
                    f"{h}attention.output.dense.{t}": state[f"{b}attn.proj.{t}"],
                    f"{h}layernorm_before.{t}": state[f"{b}norm1.{t}"],
                    f"{h}layernorm_after.{t}": state[f"{b}norm2.{t}"],
                    f"{h}intermediate.dense.{t}": state[f"{b}mlp.fc1.{t}"],
                    f"{h}output.dense.{t}": state[f"{b}mlp.fc2.{t}"]}
    return out


def test_hugging_face_vit_weights_are_converted(weights, tmp_path):
    src, _ = weights
    hf = tmp_path / "pytorch_model.bin"
    torch.save(_hf_names(src.state_dict()), hf)
    net = models.build_model(ARCH, 3, weights_path=hf).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        np.testing.assert_allclose(net.forward_features(x), src.forward_features(x), rtol=1e-5, atol=1e-5)


def test_frozen_mode_trains_nothing_and_records_one_row(weights, tmp_path):
    _, path = weights
    net = models.build_model(ARCH, 2, weights_path=path)
    before = {k: v.clone() for k, v in net.state_dict().items()}

    class Val(torch.utils.data.Dataset):
        def __len__(self):
            return 6

        def __getitem__(self, i):
            return torch.randn(3, 64, 64), i % 2, i

    hist = training.train_classifier(net, Val(), Val(), config=training.TrainConfig(epochs=3, batch_size=4),
                                     checkpoint_dir=tmp_path / "ck", frozen=True, progress=False)
    assert len(hist) == 1 and hist.epoch.iloc[0] == 0 and hist.train_loss.isna().all()
    assert 0 <= hist.val_acc.iloc[0] <= 1
    assert all(torch.equal(before[k], v.cpu()) for k, v in net.state_dict().items())
    assert (tmp_path / "ck" / "best.pt").exists() and not (tmp_path / "ck" / "last.pt").exists()
    ck_model = models.build_model(ARCH, 2, weights_path=path, random_weights=True)
    training.load_checkpoint(tmp_path / "ck" / "best.pt", ck_model)
    assert torch.equal(ck_model.blocks[1].mlp.fc2.weight, before["blocks.1.mlp.fc2.weight"])


@pytest.mark.slow
def test_frozen_vit_runs_02_to_03_through_the_runner(tmp_path):
    """A tiny random-weight ViT as "local weights": notebooks 00-03 of the tiny profile with arch timm + frozen."""
    import json
    import subprocess
    import sys

    import anndata as ad
    import yaml

    from histo_utils import io, run

    w = tmp_path / "vit_tiny_2blocks.pt"
    torch.save(_tiny_vit(depth=2, img_size=64, seed=11).state_dict(), w)
    prof = yaml.safe_load((run.PARAMS_DIR / "tiny.yaml").read_text())
    prof["notebooks"]["02_training"].update(archs=[ARCH], weights_path=str(w), frozen=True)
    (tmp_path / "vit.yaml").write_text(yaml.safe_dump(prof))
    out = tmp_path / "run"
    res = subprocess.run([sys.executable, "-m", "histo_utils.run", "--params", str(tmp_path / "vit.yaml"),
                          "--only", "00", "01", "02", "03", "--out", str(out), "--no-report"],
                         capture_output=True, text=True, cwd=run.ROOT)
    assert res.returncode == 0, res.stderr[-3000:]
    nb = out / "02_training"
    hist = io.read_table(nb / "history.tsv")
    assert len(hist) == 1 and hist.epoch.iloc[0] == 0  # frozen: nothing trained
    trained = io.read_table(nb / "features_trained_256px.parquet")
    untrained = io.read_table(nb / "features_untrained_256px.parquet")
    layers = pd.Series([c.rsplit("_", 1)[0] for c in trained.columns]).value_counts().to_dict()
    assert layers == {"blocks.0": 192, "blocks.1": 192, "cls": 192}
    assert not np.allclose(trained.to_numpy(), untrained.to_numpy())  # untrained: random weights, same shape
    adata = ad.read_h5ad(nb / "features_trained_256px.h5ad")
    assert adata.shape == trained.shape and set(adata.var.layer) == {"blocks.0", "blocks.1", "cls"}
    prov = json.loads((nb / "features_provenance.json").read_text())
    assert prov["arch"] == ARCH
    per_layer = pd.read_csv(out / "figures" / "03_feature_correlation" / "genes_per_layer.csv")
    assert set(per_layer.layer) <= {"blocks.0", "blocks.1", "cls"} and len(per_layer) > 0
    joined = ad.read_h5ad(out / "store" / "joined.h5ad")  # notebook 03 built the run's joined store
    assert joined.obsm["trained_256px"].shape[1] == 576 and joined.n_vars > 0
