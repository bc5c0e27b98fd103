import pytest
import torch

from gclf.model import (
    ModelError,
    artifact_meta,
    build_model,
    load_backbone_weights,
    load_model,
    save_model,
)

ARCH = "test_efficientnet"  # timm's tiny EfficientNet: same code paths, fast


@pytest.mark.parametrize("head, layers", [("mlp", 5), ("linear", 2)])
def test_heads_give_one_logit_per_image(head, layers):
    model = build_model(ARCH, head, dropout=0.2).eval()
    assert len(model.head) == layers
    x = torch.rand(3, 3, 32, 32)
    assert model(x).shape == (3,)


def test_mlp_head_is_the_reference_head():
    head = build_model(ARCH, "mlp", 0.3).head
    assert isinstance(head[0], torch.nn.Linear) and head[0].out_features == 512
    assert [type(m).__name__ for m in head] == ["Linear", "BatchNorm1d", "ReLU", "Dropout", "Linear"]


def test_normalisation_is_inside_the_model():
    model = build_model(ARCH, "linear", 0.0).eval()
    x = torch.rand(2, 3, 32, 32)
    mean, std = model.normalize.mean, model.normalize.std
    assert torch.allclose(model(x), model.head(model.backbone((x - mean) / std)).squeeze(1))


def test_unknown_arch_and_head_are_user_errors():
    with pytest.raises(ModelError, match="unknown timm model"):
        build_model("efficientnet_b99")
    with pytest.raises(ModelError, match="unknown head"):
        build_model(ARCH, "transformer")


def test_pretrained_without_network_says_how_to_use_a_local_file(monkeypatch):
    import timm

    def offline(*args, **kwargs):
        if kwargs.get("pretrained"):
            raise OSError("no network")
        return create(*args, **kwargs)

    create = timm.create_model
    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(ModelError, match="model.weights=PATH"):
        build_model(ARCH, pretrained=True)


def test_checkpoint_round_trip(tmp_path):
    model = build_model(ARCH, "mlp", 0.1).eval()
    path = tmp_path / "m.pt"
    save_model(path, model, artifact_meta(ARCH, "mlp", 0.1, 32))
    loaded, meta = load_model(path)
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(model(x), loaded(x))
    assert meta["image_size"] == 32 and meta["classes"] == ["male", "female"]


def test_corrupt_or_missing_checkpoint_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="not a gclf checkpoint"):
        load_model(bad)
    with pytest.raises(ModelError, match="no such model file"):
        load_model(tmp_path / "none.pt")


def test_local_backbone_weights_with_wrapper_prefix(tmp_path):
    source = build_model(ARCH, "linear", 0.0)
    state = {f"module.{k}": v for k, v in source.backbone.state_dict().items()}
    state["module.classifier.weight"] = torch.zeros(1000, 256)  # an ImageNet head is ignored
    torch.save(state, tmp_path / "w.pt")
    target = build_model(ARCH, "linear", 0.0)
    missing, unexpected = load_backbone_weights(target.backbone, tmp_path / "w.pt")
    assert missing == [] and unexpected == []
    for k, v in source.backbone.state_dict().items():
        assert torch.equal(v, target.backbone.state_dict()[k])


def test_weights_of_another_architecture_are_rejected(tmp_path):
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "w.pt")
    with pytest.raises(ModelError, match="wrong architecture"):
        load_backbone_weights(build_model(ARCH).backbone, tmp_path / "w.pt")


def test_torchvision_efficientnet_weights_load_into_timm(tmp_path):
    """torchvision names its tensors ``features.N...``: after renaming, timm computes the same features."""
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    source = torchvision.models.efficientnet_b0(weights=None).eval()  # random weights: nothing downloads
    torch.save(source.state_dict(), tmp_path / "tv.pt")
    target = build_model("efficientnet_b0", "linear", 0.0)
    missing, unexpected = load_backbone_weights(target.backbone, tmp_path / "tv.pt")
    assert missing == [] and unexpected == []
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        expected = source.features(x)
        got = target.backbone.eval().forward_features(x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_torchvision_weights_of_another_size_are_rejected(tmp_path):
    torchvision = pytest.importorskip("torchvision")
    torch.save(torchvision.models.efficientnet_b1(weights=None).state_dict(), tmp_path / "tv_b1.pt")
    with pytest.raises(ModelError, match="do not fit"):
        load_backbone_weights(build_model("efficientnet_b0").backbone, tmp_path / "tv_b1.pt")
