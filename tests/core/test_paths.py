"""The output guards in-process (kit.core.paths): each refusal and each thing let through, with the words a user
reads. tests/e2e/test_misuse.py runs the same guards through the commands; these tests are what mutation testing
(pyproject's [tool.mutmut]) can see."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from kit.core.errors import KitError
from kit.core.paths import (RUN_OWN_NAMES, Outputs, chosen_twin, inside, require_path, resolved, run_dir_of,
                            twin_path)


def make_run_dir(folder: Path, marker: str = "task.json") -> Path:
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text("model: x\n")
    (folder / marker).write_text("{}")
    return folder


def test_paths_are_compared_resolved(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "link")
    assert resolved("link/../real/a.csv") == (tmp_path / "real" / "a.csv").resolve()
    assert resolved("link/a.csv") == (tmp_path / "real" / "a.csv").resolve()
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolved("~/real") == (tmp_path / "real").resolve()
    assert inside(tmp_path / "link" / "x" / "y.csv", tmp_path / "real") and inside(tmp_path / "real", tmp_path / "link")
    assert not inside(tmp_path / "realer" / "y.csv", tmp_path / "real") and not inside(tmp_path, tmp_path / "real")


def test_a_twin_is_one_of_int8_fp16_or_none_and_lies_beside_its_graph():
    assert chosen_twin(False, False) is None
    assert chosen_twin(True, False) == "int8" and chosen_twin(False, True) == "fp16"
    with pytest.raises(KitError, match=r"^--int8 and --fp16 ask for two different twins of the graph; pass one \(int8 "
                                       r"for CPUs, fp16 for GPUs\)$"):
        chosen_twin(True, True)
    assert twin_path(Path("runs/a/ensemble.onnx"), "int8") == Path("runs/a/ensemble.int8.onnx")
    assert RUN_OWN_NAMES == ("ensemble.onnx", "ensemble.int8.onnx", "ensemble.fp16.onnx")


def test_a_run_dir_is_a_folder_with_config_and_a_task_or_classes_file(tmp_path):
    run = make_run_dir(tmp_path / "runs" / "a")
    old = make_run_dir(tmp_path / "runs" / "old", marker="classes.json")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.yaml").write_text("")                 # config.yaml alone: not a run dir
    (tmp_path / "dirs").mkdir()
    (tmp_path / "dirs" / "config.yaml").mkdir()                          # folders of those names: not a run dir
    (tmp_path / "dirs" / "task.json").mkdir()
    assert run_dir_of(run / "fold0" / "best.pt") == run.resolve() and run_dir_of(old / "x") == old.resolve()
    assert run_dir_of(tmp_path / "half" / "x.csv") is None and run_dir_of(tmp_path / "dirs" / "x.csv") is None
    assert run_dir_of(tmp_path / "runs" / "x.csv") is None


def test_require_path_refuses_empty_and_the_wrong_kind(tmp_path):
    (tmp_path / "file.csv").write_text("")
    for empty in (None, "", "  "):
        with pytest.raises(KitError, match=r"^--out is empty; give a file path$"):
            require_path("--out", empty)
    with pytest.raises(KitError, match=r"^--dir is empty; give a folder path$"):
        require_path("--dir", "", "folder")
    with pytest.raises(KitError, match=rf"^--out {tmp_path} is a folder; give a file path, e\.g\. "
                                       rf"{tmp_path / 'submission.csv'}$"):
        require_path("--out", tmp_path)
    with pytest.raises(KitError, match=rf"^--dir {tmp_path / 'file.csv'} is a file; give a folder path$"):
        require_path("--dir", tmp_path / "file.csv", "folder")
    assert require_path("--out", str(tmp_path / "file.csv")) == tmp_path / "file.csv"
    assert require_path("--dir", tmp_path, "folder") == tmp_path
    assert require_path("--dir", tmp_path / "new", "folder") == tmp_path / "new"        # not there yet: fine


def test_an_output_is_never_an_input_by_path_link_or_hard_link(tmp_path):
    source = tmp_path / "in.csv"
    source.write_text("id\n")
    os.symlink(source, tmp_path / "soft.csv")
    os.link(source, tmp_path / "hard.csv")
    guard = Outputs().reads(source, None)
    for same in (source, tmp_path / "soft.csv", tmp_path / "hard.csv", tmp_path / "sub" / ".." / "in.csv"):
        with pytest.raises(KitError, match=rf"^--out {same} is one of this command's inputs \({source}\); writing it "
                                           rf"would destroy it\. Choose another path$"):
            Outputs().reads(source).check("--out", same)
    assert guard.check("--out", tmp_path / "other.csv") == tmp_path / "other.csv"
    assert guard.check("--probs", None) is None
    with pytest.raises(KitError, match=r"^--dir-out .* is a folder"):
        guard.check("--dir-out", tmp_path)
    with pytest.raises(KitError, match=r"^--empty is empty; give a folder path$"):
        guard.check("--empty", "", "folder")
    with pytest.raises(KitError, match=r"^--folder .*in\.csv is a file; give a folder path$"):
        Outputs().check("--folder", source, "folder")
    second = tmp_path / "second.csv"
    two = Outputs().reads(source).reads(second)                # reads() adds to what was read before
    for same in (source, second):
        with pytest.raises(KitError, match="is one of this command's inputs"):
            two.check("--out", same)


def test_a_protected_folder_takes_only_its_allowed_names(tmp_path):
    comp = tmp_path / "comp"
    comp.mkdir()
    (comp / "train.csv").write_text("")
    guard = Outputs().protects(comp, "the competition folder", allow=["ok.csv"]).protects(None, "nothing")
    with pytest.raises(KitError, match=rf"^--out {comp / 'sub.csv'} lies inside the competition folder {comp}, which "
                                       rf"this command reads; write it elsewhere \(e\.g\. submissions/\)$"):
        guard.check("--out", comp / "sub.csv")
    with pytest.raises(KitError, match="lies inside the competition folder"):
        guard.check("--out", comp / "deeper" / "ok.csv")             # allowed only directly in the folder
    assert guard.check("--out", comp / "ok.csv") == comp / "ok.csv"
    assert guard.check("--out2", tmp_path / "elsewhere.csv") == tmp_path / "elsewhere.csv"
    os.link(comp / "train.csv", tmp_path / "linked.csv")
    with pytest.raises(KitError, match=rf"^--out3 {tmp_path / 'linked.csv'} is a hard link to a file inside the "
                                       rf"competition folder {comp}; writing it would change that file"):
        guard.check("--out3", tmp_path / "linked.csv")


def test_a_hard_link_is_found_only_for_a_file_into_an_existing_folder(tmp_path):
    from kit.core.paths import _links_into
    folder, other = tmp_path / "comp", tmp_path / "other"
    (folder / "deep").mkdir(parents=True)
    other.mkdir()
    (folder / "deep" / "a.png").write_text("a")
    (other / "b.png").write_text("b")
    os.link(folder / "deep" / "a.png", tmp_path / "a_link.png")
    os.link(other / "b.png", tmp_path / "b_link.png")
    assert _links_into(tmp_path / "a_link.png", folder)                # found however deep
    assert not _links_into(tmp_path / "b_link.png", folder)            # linked, but elsewhere
    assert not _links_into(tmp_path / "missing.png", folder)
    assert not _links_into(tmp_path / "a_link.png", tmp_path / "nowhere")
    (tmp_path / "single.png").write_text("s")
    assert not _links_into(tmp_path / "single.png", tmp_path)         # one link: no walk needed, never a link


def test_no_output_inside_any_run_dir_but_the_graph_names_directly_in_it(tmp_path):
    run = make_run_dir(tmp_path / "runs" / "a")
    guard = Outputs()
    for name in RUN_OWN_NAMES:
        assert guard.check(f"--{name}", run / name) == run / name
    for bad in (run / "sub.csv", run / "fold0" / "ensemble.onnx"):
        with pytest.raises(KitError, match=rf"^--out {bad} lies inside the run dir {run.resolve()} \(a trained run's "
                                           rf"files: .*write it elsewhere \(e\.g\. submissions/\)$"):
            Outputs().check("--out", bad)
    with pytest.raises(KitError, match="lies inside the run dir"):
        Outputs().check("--out", run / "ensemble.onnx", "folder")      # the names are files, not folders


def test_two_outputs_of_one_command_are_two_files(tmp_path):
    guard = Outputs()
    guard.check("--out", tmp_path / "a.csv")
    with pytest.raises(KitError, match=rf"^--probs-out and --out name the same file {tmp_path / 'x' / '..' / 'a.csv'}; "
                                       rf"give each its own path$"):
        guard.check("--probs-out", tmp_path / "x" / ".." / "a.csv")
    assert guard.check("--probs-out", tmp_path / "b.csv") == tmp_path / "b.csv"
