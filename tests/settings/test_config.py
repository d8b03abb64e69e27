import pytest

from kit.settings.config import Config, load_config
from kit.core.errors import KitError


def test_defaults_then_yaml_then_cli(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: nf_resnet26\nepochs: 3\nlr: 0.2\n")
    cfg = load_config(str(path), {"epochs": 7, "lr": None})
    assert cfg.model == "nf_resnet26"          # from YAML
    assert cfg.epochs == 7                      # CLI beats YAML
    assert cfg.lr == 0.2                        # an unset flag (None) leaves the YAML value
    assert cfg.batch_size == Config().batch_size


def test_base_layer_is_below_yaml(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("img_size: 48\n")
    cfg = load_config(str(path), {}, base={"img_size": 32, "epochs": 2})
    assert (cfg.img_size, cfg.epochs) == (48, 2)


@pytest.mark.parametrize("text,needle", [
    ("epochz: 3\n", "unknown setting 'epochz'"),
    ("epochs: three\n", "'epochs' must be int"),
    ("ema: 1\n", "'ema' must be bool"),
    ("optimizer: lion\n", "optimizer must be sgd or adamw"),
    ("metric: top5\n", "metric must be auto or one of"),
    ("- a\n- b\n", "must be a mapping"),
])
def test_bad_config_names_the_problem(tmp_path, text, needle):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(KitError, match=needle):
        load_config(str(path))


def test_missing_config_file():
    with pytest.raises(KitError, match="does not exist"):
        load_config("nope.yaml")


def test_example_config_sets_every_key():
    import yaml
    from helpers import ROOT
    path = ROOT / "configs" / "example.yaml"
    assert set(yaml.safe_load(path.read_text())) == set(Config().to_dict()) - {"mean", "std", "deterministic"}
    assert load_config(str(path)).img_size == 384


def test_auto_recipe_follows_the_starting_weights():
    """`train.py --no-pretrained ...` with nothing else set gets the benchmark's scratch recipe; pretrained
    weights (downloaded or from a file) get finetune; a setting given explicitly beats the recipe's."""
    from kit.settings.recipes import RECIPES
    scratch = load_config(None, {"pretrained": False})
    assert scratch.recipe == "scratch"
    assert all(getattr(scratch, k) == v for k, v in RECIPES["scratch"].items())
    assert scratch.drop_path_rate != Config().drop_path_rate       # the recipe changed something
    assert (scratch.model, Config().model) == ("auto", "eca_nfnet_l0")   # from scratch: kit/train/choice.py decides
    assert load_config(None, {"pretrained": False, "model": "eca_nfnet_l0"}).model == "eca_nfnet_l0"
    for overrides in ({}, {"pretrained": False, "pretrained_file": "w.pth"}):
        tuned = load_config(None, overrides)
        assert tuned.recipe == "finetune" and tuned.model == Config().model       # finetune keeps the model
        assert all(getattr(tuned, k) == v for k, v in RECIPES["finetune"].items())
        assert tuned.drop_path_rate != Config().drop_path_rate
    explicit = load_config(None, {"pretrained": False, "drop_path_rate": 0.3, "recipe": "paper"})
    assert (explicit.recipe, explicit.drop_path_rate, explicit.agc_clip) == ("paper", 0.3, "0.01")


def test_unknown_recipe_lists_the_known_ones():
    with pytest.raises(KitError, match="unknown recipe 'fast'; recipes: auto, finetune, scratch, paper"):
        load_config(None, {"recipe": "fast"})
