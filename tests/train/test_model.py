import pytest
import torch

from kit.core.errors import KitError
from kit.train.model import ImageNormalizer, check_model_name, create_model, normalization


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
    with pytest.raises(KitError, match="unknown timm model 'nf_resnet26_halff'; similar names: nf_resnet26_half"):
        check_model_name("nf_resnet26_halff")
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


@pytest.mark.parametrize("form", ["safetensors", "state_dict", "state_dict_ema", "module_prefix", "kit_best",
                                  "hub_safetensors", "hub_bin"])
def test_pretrained_weights_load_in_every_published_form(tmp_path, form):
    """Weights as they are published and shared: a .safetensors file, a training checkpoint (state_dict, or its EMA,
    which wins), DataParallel's module. prefixes, a kit run's best.pt, a folder as timm publishes on the hub."""
    import json
    from safetensors.torch import save_file
    from kit.store import checkpoint
    torch.manual_seed(0)
    source = create_model("test_nfnet", 5)
    weights = source.state_dict()
    decoy = {k: torch.zeros_like(v) for k, v in weights.items()}        # what must NOT be loaded
    path = tmp_path / "w.pth"
    if form == "safetensors":
        path = tmp_path / "w.safetensors"
        save_file(weights, str(path))
    elif form == "state_dict":
        torch.save({"state_dict": weights, "epoch": 3}, path)
    elif form == "state_dict_ema":
        torch.save({"state_dict": decoy, "state_dict_ema": weights}, path)
    elif form == "module_prefix":
        torch.save({f"module.{k}": v for k, v in weights.items()}, path)
    elif form == "kit_best":
        path = tmp_path / "best.pt"
        checkpoint.save({"model": weights, "epoch": 1, "score": 0.5, "config": {"model": "test_nfnet"}}, path)
    else:
        path = tmp_path / "hub"
        path.mkdir()
        (path / "config.json").write_text(json.dumps({"architecture": "test_nfnet", "num_classes": 5}))
        if form == "hub_safetensors":
            save_file(weights, str(path / "model.safetensors"))
        else:
            torch.save(weights, path / "pytorch_model.bin")
    loaded = create_model("test_nfnet", 5, pretrained_file=str(path))
    for k, v in weights.items():
        assert torch.equal(loaded.state_dict()[k], v), (form, k)


def test_a_hub_folder_is_checked_against_the_model_and_sets_it_for_auto(tmp_path):
    import json
    from kit.core.task import Multiclass
    from kit.store.rundir import RunDir
    from kit.settings.config import load_config
    from kit.train.choice import choose_model
    folder = tmp_path / "hub"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architecture": "test_resnet.r160_in1k"}))
    with pytest.raises(KitError, match=r"is a folder without model.safetensors or pytorch_model.bin \(it holds: "
                                       r"config.json\)"):
        create_model("test_resnet", 3, pretrained_file=str(folder))
    torch.save(create_model("test_resnet", 3).state_dict(), folder / "pytorch_model.bin")
    with pytest.raises(KitError, match=r"holds test_resnet.r160_in1k \(its config.json\), not --model test_nfnet; "
                                       r"pass --model test_resnet"):
        create_model("test_nfnet", 3, pretrained_file=str(folder))
    cfg = load_config(None, {"model": "auto", "pretrained_file": str(folder)})
    assert choose_model(cfg, RunDir(tmp_path / "run"), Multiclass(["a", "b"]), None, 10, 0, None)[0] == "test_resnet"
    (tmp_path / "junk.bin").write_bytes(b"not a checkpoint")
    with pytest.raises(KitError, match=r"junk.bin cannot be read as weights"):
        create_model("test_nfnet", 3, pretrained_file=str(tmp_path / "junk.bin"))
