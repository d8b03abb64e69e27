import pytest
import torch

from kit.core.errors import KitError
from kit.train.model import ImageNormalizer, create_model, normalization


def test_pretrained_file_loads_weights_and_replaces_a_mismatched_head(tmp_path):
    torch.manual_seed(0)
    source = create_model("test_nfnet", 7)
    path = tmp_path / "weights.pth"
    torch.save(source.state_dict(), path)
    same = create_model("test_nfnet", 7, pretrained_file=str(path))
    for (k, a), b in zip(source.state_dict().items(), same.state_dict().values()):
        assert torch.equal(a, b), k
    torch.manual_seed(1)
    other = create_model("test_nfnet", 3, pretrained_file=str(path))
    assert other.get_classifier().out_features == 3
    body = {k: v for k, v in source.state_dict().items() if not k.startswith("head.fc")}
    assert all(torch.equal(other.state_dict()[k], v) for k, v in body.items())


def test_pretrained_file_of_another_architecture_is_an_error(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save(create_model("test_resnet", 3).state_dict(), path)
    with pytest.raises(KitError, match=r"does not fit model .test_nfnet.: \d+ missing .*\d+ unexpected"):
        create_model("test_nfnet", 3, pretrained_file=str(path))


def test_missing_pretrained_file_and_unknown_model(tmp_path):
    with pytest.raises(KitError, match="does not exist"):
        create_model("test_nfnet", 3, pretrained_file=str(tmp_path / "none.pth"))
    with pytest.raises(KitError, match="unknown timm model 'nfnet_l9'.*nfnet"):
        create_model("nfnet_l9", 3)


def test_normalization_follows_the_model_unless_given():
    model = create_model("test_nfnet", 3)
    assert normalization(model) == ([0.5] * 3, [0.5] * 3)            # test_nfnet's pretrained config
    assert normalization(model, [0.1, 0.2, 0.3], [1, 1, 1]) == ([0.1, 0.2, 0.3], [1.0, 1.0, 1.0])


def test_image_normalizer_is_the_textbook_formula_and_keeps_nhwc_memory():
    images = torch.randint(0, 256, (2, 5, 4, 3), dtype=torch.uint8)
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    out = ImageNormalizer(mean, std)(images)
    expected = (images.permute(0, 3, 1, 2).double() / 255 - torch.tensor(mean, dtype=torch.double).view(1, 3, 1, 1)) \
        / torch.tensor(std, dtype=torch.double).view(1, 3, 1, 1)
    assert out.shape == (2, 3, 5, 4) and out.dtype == torch.float32
    assert torch.allclose(out.double(), expected, atol=1e-5)
    assert out.is_contiguous(memory_format=torch.channels_last)     # no copy unless NCHW is asked for
