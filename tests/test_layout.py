"""The module layout's contracts: no import cycle inside kit/ (lazy imports included), the deploy side never
reaches the training side, the torch-free modules import without torch, timm, OpenCV and albumentations, and
every Config field has its command-line flag."""
import ast
import textwrap
from pathlib import Path

import pytest

from conftest import ROOT, run_cli

KIT = ROOT / "kit"
MODULES = sorted(p.stem for p in KIT.glob("*.py") if p.stem != "__init__")
HEAVY = ("torch", "timm", "cv2", "albumentations")
TORCH_FREE = ["data", "images", "rundir", "oof", "report", "artifact", "predictor", "submission", "task", "metrics",
              "folds", "config", "demo", "errors", "atomic", "log", "entry", "blend", "serve", "web"]
DEPLOY = ["artifact", "predictor", "submission", "serve", "web"]


def imports(module: str) -> tuple[set[str], set[str]]:
    """(kit modules, top-level packages) that `module` imports anywhere in its body, lazily or not."""
    tree = ast.parse((KIT / f"{module}.py").read_text())
    inside, outside = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                inside.add(node.module.split(".")[0])
            else:                                               # from . import x, y
                inside.update(a.name for a in node.names if a.name in MODULES)
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module.startswith("kit."):
                inside.add(node.module.split(".")[1])
            else:
                outside.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            outside.update(a.name.split(".")[0] for a in node.names)
    return inside & set(MODULES), outside


GRAPH = {m: imports(m)[0] for m in MODULES}


def reach(module: str) -> set[str]:
    seen, todo = set(), [module]
    while todo:
        for nxt in GRAPH[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_the_import_graph_is_parsed():
    assert "engine" in GRAPH["training"] and "artifact" in GRAPH["predictor"]      # the parser sees imports
    assert "metrics" in GRAPH["task"]                                           # including lazy ones


def test_no_import_cycles():
    cycles = [m for m in MODULES if m in reach(m)]
    assert cycles == [], f"modules on an import cycle: {cycles}"


def heavy(module: str) -> set[str]:
    return {pkg for m in {module} | reach(module) for pkg in imports(m)[1] if pkg in HEAVY}


@pytest.mark.parametrize("module", DEPLOY)
def test_deploy_side_never_reaches_the_training_side(module):
    training_side = {m for m in MODULES if heavy(m)}
    assert {"engine", "export", "model"} <= training_side                       # the rule has teeth
    assert not reach(module) & training_side, reach(module) & training_side


def test_torch_free_modules_import_without_torch(trained, tmp_path):
    for m in TORCH_FREE:
        assert not heavy(m), f"kit.{m} reaches {heavy(m)}"
    _, run_dir, _, _ = trained
    script = textwrap.dedent(f"""
        import sys

        class Unimportable:                     # any import of these packages now raises ImportError
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {HEAVY!r}:
                    raise ImportError(name + " is made unimportable by this test")

        sys.meta_path.insert(0, Unimportable())
        import importlib
        for m in {TORCH_FREE!r}:
            importlib.import_module("kit." + m)
        from kit.report import write_reports
        from kit.rundir import RunDir
        result = write_reports(RunDir({str(run_dir)!r}), quiet=True)
        assert not set({HEAVY!r}) & set(sys.modules)
        print("cv", round(result["cv"], 6), "folds", sorted(result["folds"]))
    """)
    r = run_cli("-c", script)
    assert r.returncode == 0, r.stderr
    assert "folds [0, 1, 2]" in r.stdout


def test_every_config_field_has_its_flag():
    import train
    from kit.config import FIELDS, Config
    samples = {"int": ("3", 3), "float": ("0.25", 0.25), "str": ("x", "x")}
    for name, f in FIELDS.items():
        kind = f.type.replace("Optional[", "").rstrip("]")
        flag = "--" + name.replace("_", "-")
        if kind == "bool":
            assert getattr(train.parse_args([flag]), name) is True
            assert getattr(train.parse_args(["--no-" + flag[2:]]), name) is False
        elif kind == "list":
            assert getattr(train.parse_args([flag, "1", "2", "3"]), name) == [1.0, 2.0, 3.0]
        else:
            text, value = (f.metadata["choices"][-1],) * 2 if f.metadata["choices"] else samples[kind]
            assert getattr(train.parse_args([flag, text]), name) == value, name
        assert getattr(train.parse_args([]), name) is None           # not given: the YAML and defaults decide
    assert len(FIELDS) == len(Config().to_dict())


def test_the_predictor_wheel_holds_everything_the_deploy_side_imports():
    from kit.bundle import MODULES
    needed = {"submission", "predictor", "entry"} | reach("submission") | reach("predictor") | reach("entry")
    # kit.task imports kit.metrics (scikit-learn) lazily, to score and fit thresholds: training and export only;
    # tests/test_deploy.py predicts from the wheel in a venv without scikit-learn
    assert needed - {"metrics"} <= set(MODULES), needed - set(MODULES)
    assert not {pkg for m in MODULES if m != "__init__" for pkg in imports(m)[1]} & {*HEAVY, "yaml", "sklearn", "scipy"}
