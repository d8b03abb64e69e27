import pytest

from kit.config import Config, load_config
from kit.errors import KitError


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
    from conftest import ROOT
    path = ROOT / "configs" / "example.yaml"
    assert set(yaml.safe_load(path.read_text())) == set(Config().to_dict()) - {"mean", "std", "deterministic"}
    assert load_config(str(path)).img_size == 384
