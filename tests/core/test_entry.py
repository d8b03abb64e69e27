"""kit.core.entry: every command's flags made from its request dataclass (add_flags / parse_request), so a default
lives in one place; the parser's mistakes are one-line KitErrors."""
import dataclasses
from dataclasses import dataclass
from typing import Optional

import pytest

from kit.core.entry import number, option, parse_request
from kit.core.errors import KitError


@dataclass
class Example:
    onnx: str = option(None, "a graph", required=True)
    sources: list[str] = option([], "images", positional=True, nargs="+", metavar="SOURCE")
    run_dirs: list[str] = option(["runs/default"], "a run; repeatable", flag="run-dir")
    size: list[int] = option([], "sizes", parse=number(1, 9, int), nargs="+")
    batch: int = option(32, "images a call", parse=number(1, None, int))
    rate: float = option(0.5, "a rate")
    mode: str = option("auto", "how", choices=("auto", "fast"))
    name: Optional[str] = option(None, "a name")
    int8: bool = option(False, "a switch")
    tta: Optional[bool] = option(None, "a setting that may be on or off")
    internal: int = 4                      # no option(): no flag


def test_unset_flags_take_the_dataclass_defaults():
    r = parse_request(Example, ["--onnx", "m.onnx", "a.png"])
    assert r == Example(onnx="m.onnx", sources=["a.png"])
    assert (r.run_dirs, r.batch, r.rate, r.mode, r.name, r.int8, r.tta, r.internal) == \
        (["runs/default"], 32, 0.5, "auto", None, False, None, 4)
    assert r.run_dirs is not Example(onnx="x").run_dirs            # a fresh list per request, never shared


def test_each_kind_of_flag_parses_to_its_field():
    r = parse_request(Example, ["--onnx", "m", "a", "b", "--run-dir", "A", "--run-dir", "B", "--size", "3", "4",
                                "--batch", "8", "--rate", "0.25", "--mode", "fast", "--name", "n", "--int8", "--no-tta"])
    assert (r.sources, r.run_dirs, r.size, r.batch, r.rate, r.mode, r.name, r.int8, r.tta) == \
        (["a", "b"], ["A", "B"], [3, 4], 8, 0.25, "fast", "n", True, False)
    assert parse_request(Example, ["--onnx", "m", "a", "--tta"]).tta is True


@pytest.mark.parametrize("argv, words", [
    (["a"], "the following arguments are required: --onnx"),
    (["--onnx", "m"], "required: SOURCE"),
    (["--onnx", "m", "a", "--batch", "0"], "argument --batch: '0' is outside 1..inf"),
    (["--onnx", "m", "a", "--size", "10"], "argument --size: '10' is outside 1..9"),
    (["--onnx", "m", "a", "--mode", "slow"], "argument --mode: invalid choice: 'slow'"),
    (["--onnx", "", "a"], "argument --onnx: it is empty"),
    (["--onnx", "m", "a", "--no-int8"], "unrecognized arguments: --no-int8"),   # a switch that is off unless given
    (["--onnx", "m", "a", "--rate", "x"], "argument --rate: invalid float value: 'x'"),
])
def test_a_bad_command_line_is_one_error_naming_the_flag(argv, words):
    with pytest.raises(KitError, match="see prog --help") as e:
        parse_request(Example, argv, prog="prog")
    assert words in str(e.value) and "\n" not in str(e.value)


def test_help_states_the_dataclass_default(capsys):
    with pytest.raises(SystemExit):
        parse_request(Example, ["--help"], prog="prog")
    text = " ".join(capsys.readouterr().out.split())
    assert "images a call (default 32)" in text and "a run; repeatable (default runs/default)" in text
    assert "--internal" not in text and "a switch (default" not in text


def test_every_command_request_parses_to_its_own_defaults():
    """Each command's request: the smallest command line gives the dataclass's own defaults for everything else."""
    from kit.deploy.bundle import BundleRequest
    from kit.deploy.triton import RepositoryRequest
    from kit.deploy.web import PageRequest
    from kit.evaluate.report import ReportRequest
    from kit.export.infer import InferRequest
    from kit.runs import RunsRequest
    from kit.runtime.predict import PredictRequest
    from kit.runtime.serve import ServeSettings
    from kit.runtime.submission import SubmissionRequest
    from kit.settings.cli import TrainRequest
    from kit.tuning.study import TuneRequest
    required = {"onnx": "m.onnx", "out": "o", "data_dir": "d", "space": "s.yaml", "trials": 3}
    for request in (BundleRequest, RepositoryRequest, PageRequest, ReportRequest, InferRequest, RunsRequest,
                    PredictRequest, ServeSettings, SubmissionRequest, TrainRequest, TuneRequest):
        needed = {f.name: required[f.name] for f in dataclasses.fields(request) if f.metadata.get("required")}
        argv = [a for name, value in needed.items() for a in ("--" + name.replace("_", "-"), str(value))]
        if any(f.name == "sources" for f in dataclasses.fields(request)):
            argv.append("x.png")
            needed["sources"] = ["x.png"]
        assert parse_request(request, argv) == request(**needed), request.__name__
