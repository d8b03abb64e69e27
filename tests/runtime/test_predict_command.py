"""`kit.predict` in-process on a graph built with onnx.helper (helpers.colour_graph): the sources found in order,
each row its own image's answer in CSV and JSON lines, top-k, unreadable images stopped or skipped, and the refusals.
tests/runtime/test_predict.py runs the command over an exported ensemble; these tests are what mutation testing
(pyproject's [tool.mutmut]) can see."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from helpers import colour_graph, csv_rows, solid_image
from kit.core.errors import KitError
from kit.runtime.predict import csv_row, glob_files, image_files, main, predict

COLOURS = {"r": (250, 0, 0), "g": (0, 250, 0), "b": (0, 0, 250)}


@pytest.fixture
def photos(tmp_path):
    """photos/ with red, green and blue images in two folders, a non-image file, and a graph beside them."""
    root = tmp_path / "photos"
    (root / "sub").mkdir(parents=True)
    for name, colour in (("b1", "b"), ("r1", "r"), ("sub/g1", "g"), ("sub/r2", "r")):
        solid_image(root / f"{name}.png", COLOURS[colour])
    (root / "notes.txt").write_text("not an image")
    return root, colour_graph(tmp_path / "g.onnx")


def test_each_row_is_its_own_images_answer_in_source_order(photos, tmp_path):
    root, graph = photos
    extra = solid_image(tmp_path / "alone.png", COLOURS["g"])
    sources = [str(root), str(extra), str(root / "r1.png")]                # r1 again: once only
    assert predict(graph, sources, tmp_path / "p.csv") == 5
    rows = csv_rows(tmp_path / "p.csv")
    assert rows[0] == ["path", "label", "top1", "p1", "top2", "p2", "top3", "p3"]      # 3 classes under top 5
    assert [(r[0], r[1], r[2]) for r in rows[1:]] == [
        (str(root / "b1.png"), "blue", "blue"), (str(root / "r1.png"), "red", "red"),
        (str(root / "sub" / "g1.png"), "green", "green"), (str(root / "sub" / "r2.png"), "red", "red"),
        (str(extra), "green", "green")]
    assert all(float(r[3]) > 0.99 and float(r[3]) >= float(r[5]) >= float(r[7]) for r in rows[1:])
    predict(graph, [str(root)], tmp_path / "p.jsonl", top_k=2)
    lines = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [(a["path"], a["label"], list(a["probabilities"])[0], len(a["probabilities"])) for a in lines] == [
        (str(root / "b1.png"), "blue", "blue", 2), (str(root / "r1.png"), "red", "red", 2),
        (str(root / "sub" / "g1.png"), "green", "green", 2), (str(root / "sub" / "r2.png"), "red", "red", 2)]
    predict(graph, [str(root / "sub")], tmp_path / "all.jsonl")
    assert all(len(json.loads(line)["probabilities"]) == 3 for line in (tmp_path / "all.jsonl").read_text().splitlines())
    main(["--onnx", str(graph), str(root / "b1.png"), "--out", str(tmp_path / "one.csv"), "--top-k", "1",
          "--batch-size", "1", "--provider", "cpu"])
    assert csv_rows(tmp_path / "one.csv") == [["path", "label", "top1", "p1"],
                                              [str(root / "b1.png"), "blue", "blue", csv_rows(tmp_path / "p.csv")[1][3]]]


def test_an_unreadable_image_stops_the_run_or_gets_its_reason_in_its_row(photos, tmp_path):
    root, graph = photos
    (root / "broken.png").write_bytes(b"not a png")
    with pytest.raises(KitError, match=r"broken\.png.*Replace or remove these files, or pass --skip-errors"):
        predict(graph, [str(root)], tmp_path / "p.csv")
    assert not (tmp_path / "p.csv").exists()
    assert predict(graph, [str(root)], tmp_path / "p.csv", skip_errors=True) == 5
    rows = csv_rows(tmp_path / "p.csv")
    assert rows[0][-1] == "error" and [r[0] for r in rows[1:]] == sorted(r[0] for r in rows[1:])
    broken = next(r for r in rows[1:] if r[0].endswith("broken.png"))
    assert broken[1:-1] == [""] * (len(rows[0]) - 2) and broken[-1]
    assert all(r[-1] == "" and r[1] for r in rows[1:] if r is not broken)
    predict(graph, [str(root)], tmp_path / "p.jsonl", skip_errors=True)
    lines = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [sorted(a) for a in lines if a["path"].endswith("broken.png")] == [["error", "path"]]


def test_sources_and_outputs_that_cannot_work_are_refused(photos, tmp_path):
    root, graph = photos
    (tmp_path / "empty").mkdir()
    for sources, message in (([str(tmp_path / "missing.png")], r"missing\.png does not exist; pass image files, "
                                                               r"folders or glob patterns$"),
                             ([str(tmp_path / "empty")], r"^folder .*empty holds no image file \(suffixes .*, "
                                                         r"searched recursively\)$"),
                             ([str(root / "*.gif")], r"^'.*\*\.gif' matches no image file \(suffixes ")):
        with pytest.raises(KitError, match=message):
            image_files(sources)
    os.mkfifo(tmp_path / "pipe.png")
    with pytest.raises(KitError, match=r"pipe\.png is not a regular file \(a named pipe or device\); pass image files"):
        image_files([str(tmp_path / "pipe.png")])
    with pytest.raises(KitError, match=r"^--out .*p\.txt must end in \.csv or \.jsonl$"):
        predict(graph, [str(root)], tmp_path / "p.txt")
    os.symlink(root / "b1.png", tmp_path / "link.csv")                  # --out that is an input image, by a link
    with pytest.raises(KitError, match=r"^--out .*link\.csv is one of this command's inputs \(.*b1\.png\)"):
        predict(graph, [str(root)], tmp_path / "link.csv")
    assert (root / "b1.png").read_bytes()[:4] == b"\x89PNG"


def test_globs_match_as_glob_reads_them_without_following_folder_links(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("a/x1.png", "a/b/x2.png", "a/b/c/y3.png", "a/.hidden/x4.png", "a/.x5.png", "a/z.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    os.symlink(tmp_path / "a", tmp_path / "a" / "b" / "loop")            # a link back up: never followed
    found = lambda pattern: sorted(p.as_posix() for p in glob_files(pattern))      # noqa: E731
    assert found("a/**/x*.png") == ["a/b/x2.png", "a/x1.png"]           # **/ any folders, none included
    assert found("./a/*/x?.png") == ["a/b/x2.png"]                      # a leading ./ dropped; ? one character
    assert found("a/[!xy]*.png") == ["a/z.png"] and found("a/[xz]*.png") == ["a/x1.png", "a/z.png"]
    assert found("a/.*.png") == ["a/.x5.png"] and found("a/.hidden/*.png") == ["a/.hidden/x4.png"]
    assert found("a/**") == ["a/b/c/y3.png", "a/b/x2.png", "a/x1.png", "a/z.png"]
    assert found(f"{tmp_path}/a/*.png") == [f"{tmp_path.as_posix()}/a/x1.png", f"{tmp_path.as_posix()}/a/z.png"]


def test_csv_rows_are_padded_to_the_header_and_a_regression_gives_its_value():
    assert csv_row(Path("a.png"), {"label": "3.5", "value": 3.5}, 5, 3) == ["a.png", "3.5", "3.5"]
    assert csv_row(Path("a.png"), {"label": "x", "probabilities": {"x": 0.7, "y": 0.2, "z": 0.1}}, 2, 7) == \
        ["a.png", "x", "x", "0.7", "y", "0.2", ""]
    assert csv_row(Path("b.png"), {"error": "cannot decode"}, 2, 5) == ["b.png", "", "", "", "cannot decode"]
