"""The layout's contracts, read from the folders themselves (no module list is kept anywhere):

- kit/ holds stage packages whose floors follow the data flow; an import never runs up a floor, and there is no
  import cycle, lazy imports included;
- the shipped runtime is whole folders (RUNTIME_PACKAGES): they import with torch, timm, OpenCV and
  albumentations unimportable, and the predictor wheel holds exactly them;
- no module outside the task package asks which kind of task it holds;
- no function in kit/ is longer than 80 lines; docs/architecture.md maps every module, in data-flow order;
- every Config field has its command-line flag; every command's flags come from its request dataclass;
- tests/ mirrors kit/: a folder per stage package holds that package's tests, tests/e2e/ the commands run whole.
"""
import ast
import re
import textwrap
import zipfile
from pathlib import Path


from helpers import ROOT, run_cli

KIT = ROOT / "kit"
HEAVY = ("torch", "timm", "cv2", "albumentations")
# the order of the data flow, as import floors: a package imports only from lower floors (and itself)
FLOORS = [("core",), ("settings", "prepare", "runtime"), ("store",), ("train",), ("evaluate",), ("export", "tuning"),
          ("deploy",)]
FLOOR = {pkg: level for level, pkgs in enumerate(FLOORS) for pkg in pkgs}
DATA_FLOW = ["core", "settings", "prepare", "store", "train", "evaluate", "tuning", "export", "runtime", "deploy"]
MAX_FUNCTION_LINES = 80


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(KIT.rglob("*.py"))}


def package(module: str) -> str | None:
    """The stage package of a kit module (None: kit/__init__.py and the top-level command modules)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and (KIT / parts[1]).is_dir()) else None


def imports(module: str, lazy: bool = True) -> tuple[set[str], set[str]]:
    """(kit modules, top-level outside packages) that `module` imports: anywhere in its body when `lazy`, else
    only at import time (module level, outside functions)."""
    tree = ast.parse(MODULES[module].read_text())
    nodes = ast.walk(tree) if lazy else _module_level(tree)
    inside, outside = set(), set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{module}: use absolute imports (from kit.<package>.<module> import ...)"
            if node.module and (node.module == "kit" or node.module.startswith("kit.")):
                for alias in node.names:
                    target = f"{node.module}.{alias.name}"
                    inside.add(target if target in MODULES else node.module)
            elif node.module:
                outside.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                (inside if alias.name.startswith("kit.") else outside).add(
                    alias.name if alias.name.startswith("kit.") else alias.name.split(".")[0])
    return {m for m in inside if m in MODULES}, outside


def _module_level(tree):
    todo = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        yield node
        todo.extend(ast.iter_child_nodes(node))


GRAPH = {m: imports(m)[0] - {m} for m in MODULES}


def reach(module: str, graph=GRAPH) -> set[str]:
    seen, todo = set(), [module]
    while todo:
        for nxt in graph[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def cycles(graph) -> list[str]:
    return [m for m in graph if m in reach(m, graph)]


def upward(graph) -> list[tuple[str, str]]:
    """Imports that run up a floor (or sideways into another package of the same floor), or from a stage
    package into a top-level command module."""
    return [(m, t) for m, targets in graph.items() for t in targets if package(m) and t != "kit" and
            (package(t) is None or (package(t) != package(m) and FLOOR[package(t)] >= FLOOR[package(m)]))]


def runtime_modules() -> list[str]:
    from kit.deploy.bundle import RUNTIME_PACKAGES
    return sorted(m for m in MODULES if package(m) in RUNTIME_PACKAGES)


def test_the_import_graph_is_parsed():
    assert "kit.train.fold" in GRAPH["kit.train.run"] and "kit.core.artifact" in GRAPH["kit.runtime.predictor"]
    assert "kit.core.metrics" in GRAPH["kit.core.task.multiclass"]              # lazy imports count too
    assert set(FLOOR) == {p.name for p in KIT.iterdir() if p.is_dir() and p.name != "__pycache__"}


def test_top_level_holds_packages_and_thin_commands_only():
    """Beside the stage packages, kit/ holds only `python -m kit.<command>` entry points: each hands its parsed flags
    to a stage package under main_guard, in a few lines (the logic lives in the packages)."""
    commands = [p for p in KIT.glob("*.py") if p.name != "__init__.py"]
    assert len(commands) >= 8                                      # the check has something to check
    for path in commands:
        text = path.read_text()
        assert "main_guard(main)" in text and len(text.splitlines()) <= 30, path.name


def test_no_import_cycles_and_no_import_runs_up_a_floor():
    assert cycles(GRAPH) == []
    assert upward(GRAPH) == []
    # the checks have teeth: the imports they forbid are found
    assert upward({**GRAPH, "kit.core.errors": {"kit.train.model"}}) == [("kit.core.errors", "kit.train.model")]
    assert cycles({**GRAPH, "kit.core.errors": {"kit.core.task"}, "kit.core.task": {"kit.core.errors"}})


def test_the_floors_follow_the_data_flow():
    """A stage never sits below one whose files it reads: training (which writes the run dir through kit.store) is
    below the evaluation that reads it, and so on. The runtime is the exception by design: the shipped predictor
    sits just above core so that it can carry nothing else."""
    staged = [p for p in DATA_FLOW if p != "runtime"]
    for a, b in zip(staged, staged[1:]):
        assert FLOOR[a] <= FLOOR[b], f"{a} (floor {FLOOR[a]}) comes before {b} (floor {FLOOR[b]}) in the data flow"
    assert FLOOR["store"] < FLOOR["train"] < FLOOR["evaluate"]      # the run dir's files below both their users


def test_runtime_folders_never_import_heavy_packages_at_import_time():
    for m in runtime_modules():
        for t in {m} | {x for x in reach(m)}:
            assert package(t) in ("core", "runtime", None), f"{m} reaches {t}"
        heavy = imports(m, lazy=False)[1] & set(HEAVY)
        assert not heavy, f"{m} imports {heavy} at import time"


def test_runtime_folders_import_and_predict_without_torch(onnx_file, trained):
    comp = trained[0]
    script = textwrap.dedent(f"""
        import importlib, sys

        class Unimportable:                     # any import of these packages now raises ImportError
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {HEAVY!r}:
                    raise ImportError(name + " is made unimportable by this test")

        sys.meta_path.insert(0, Unimportable())
        for m in {runtime_modules()!r}:
            importlib.import_module(m)
        from kit.runtime.predictor import Predictor
        p = Predictor({str(onnx_file)!r}, "cpu")
        files = sorted(__import__("pathlib").Path({str(comp / "test_images")!r}).iterdir())[:3]
        print([p.answer(row)["label"] for row in p.predict_files(files)])
        assert not set({HEAVY!r}) & set(sys.modules)
    """)
    r = run_cli("-c", script)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("['")


def test_the_predictor_wheel_holds_exactly_the_runtime_folders(tmp_path):
    from kit.deploy.bundle import build_predictor_wheel
    wheel = build_predictor_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as z:
        shipped = sorted(n for n in z.namelist() if n.startswith("kit/"))
    expected = sorted(["kit/__init__.py"] + [str(MODULES[m].relative_to(ROOT)) for m in runtime_modules()])
    assert shipped == expected


def test_no_module_outside_the_task_package_asks_for_a_kind():
    test = re.compile(r"\.kind\s*(==|!=|in\b|not in\b)|\bkind\s*(==|!=)\s*[\"'](multiclass|multilabel|regression)")
    offenders = [f"{m}:{i}" for m, path in MODULES.items() if not m.startswith("kit.core.task")
                 for i, line in enumerate(path.read_text().splitlines(), 1) if test.search(line)]
    assert offenders == []


def test_no_function_is_longer_than_80_lines():
    long = []
    for m, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{m}.{node.name}: {lines}")
    assert long == []


def test_the_architecture_doc_maps_every_module_in_data_flow_order():
    doc = (ROOT / "docs" / "architecture.md").read_text()
    mentioned = re.findall(r"^- `(kit/[\w/]+\.py)` — ", doc, re.M)
    files = [str(p.relative_to(ROOT)) for p in MODULES.values()]
    assert sorted(mentioned) == sorted(files), set(files) ^ set(mentioned)           # each module once
    stages = [package(module_name(ROOT / f)) for f in mentioned]
    order = [DATA_FLOW.index(p) if p else len(DATA_FLOW) for p in stages]
    assert order == sorted(order)


def test_every_config_field_has_its_flag():
    import train
    from kit.settings.config import FIELDS, Config
    samples = {"int": ("3", 3), "float": ("0.25", 0.25), "str": ("x", "x")}
    for name, f in FIELDS.items():
        kind = f.type.replace("Optional[", "").rstrip("]")
        flag = "--" + name.replace("_", "-")
        if kind == "bool":
            assert getattr(train.parse_args([flag]), name) is True
            assert getattr(train.parse_args(["--no-" + flag[2:]]), name) is False
        elif kind == "list":
            assert getattr(train.parse_args([flag, "1", "2", "3"]), name) == [1.0, 2.0, 3.0]
        elif kind == "Paths":                                      # repeatable
            assert getattr(train.parse_args([flag, "a", flag, "b"]), name) == ["a", "b"]
        else:
            text, value = (f.metadata["choices"][-1],) * 2 if f.metadata["choices"] else samples[kind]
            assert getattr(train.parse_args([flag, text]), name) == value, name
        assert getattr(train.parse_args([]), name) is None           # not given: the YAML and defaults decide
    assert len(FIELDS) == len(Config().to_dict())


def test_every_command_makes_its_flags_from_its_request_dataclass():
    """One mechanism, one place for a default: kit.core.entry.add_flags is the only code that adds a flag, so no
    command repeats a default its request dataclass already holds (infer.py once wrote --out's default twice)."""
    sources = [*MODULES.values(), *ROOT.glob("*.py")]
    adders = [str(p.relative_to(ROOT)) for p in sources if p != KIT / "core" / "entry.py" and
              re.search(r"\.add_argument\(|\.add_mutually_exclusive_group\(", p.read_text())]
    assert adders == [], f"flags added by hand (use kit.core.entry.option / add_flags): {adders}"


def test_every_repository_path_named_in_code_docs_and_help_exists():
    """A path like kit/settings/config.py or bench/recipe.py named in the README, docs/, a docstring, a comment, a
    help text or a bench script exists (a results file: or is what a bench script writes by default)."""
    import re
    pattern = re.compile(r"\b(?:kit|bench|tests|configs|docs)/[A-Za-z0-9_./-]+\.(?:py|md|yaml|jsonl|toml|csv|json)\b")
    sources = [ROOT / "README.md", ROOT / "train.py", ROOT / "infer.py", ROOT / "pyproject.toml",
               *(ROOT / "docs").glob("*.md"), *(ROOT / "kit").rglob("*.py"), *(ROOT / "bench").glob("*.py"),
               ROOT / "bench" / "RESULTS.md", *(ROOT / "configs").glob("*.yaml")]
    written = {m.group(1) for f in (ROOT / "bench").glob("*.py")
               for m in re.finditer(r'default="(bench/results/[^"]+)"', f.read_text(encoding="utf-8"))}
    missing = sorted({f"{path} (in {source.relative_to(ROOT)})" for source in sources
                      for path in pattern.findall(source.read_text(encoding="utf-8"))
                      if not (ROOT / path).exists() and path not in written})
    assert not missing, missing


def test_every_test_the_docs_cite_as_proof_exists():
    """`tests/<file>.py::<name>` in the README, docs/ or bench/RESULTS.md names a test defined in that file: a claim
    that cites its test keeps citing one after a rename."""
    import re
    pattern = re.compile(r"\b(tests/[A-Za-z0-9_/]+\.py)::([A-Za-z0-9_]+)")
    sources = [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), ROOT / "bench" / "RESULTS.md"]
    cited = {(path, name, source.name) for source in sources
             for path, name in pattern.findall(source.read_text(encoding="utf-8"))}
    assert len(cited) >= 5, cited                     # the pattern still finds the README's citations
    missing = sorted(f"{path}::{name} (in {source})" for path, name, source in cited
                     if not re.search(rf"^def {name}\(", (ROOT / path).read_text(encoding="utf-8"), re.M))
    assert not missing, missing


def test_the_tests_mirror_the_packages():
    """Each folder of tests/ is a kit stage package's (or e2e/, the commands run end to end) and holds test files; only
    the shared files and the repository-wide layout test sit at its top."""
    packages = {p.name for p in KIT.iterdir() if (p / "__init__.py").is_file()}
    folders = {p.name for p in (ROOT / "tests").iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert folders - packages == {"e2e"}, folders - packages
    assert all(any((ROOT / "tests" / f).glob("test_*.py")) for f in folders)
    top = {p.name for p in (ROOT / "tests").glob("*.py")}
    assert top == {"conftest.py", "helpers.py", "test_layout.py"}, top
