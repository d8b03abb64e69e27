import numpy as np
import pytest
from PIL import Image

from helpers import make_competition, write_rows
from kit.settings.config import load_config
from kit.core.table import check_images_readable, submission_table, train_table
from kit.core.errors import KitError
from kit.core.images import load_rgb
from kit.core.task import Multiclass, label_order


def cfg_for(root):
    return load_config(None, {"data_dir": str(root)})


def test_labels_keep_their_text_and_order():
    assert label_order(["10", "2", "3", "2"]) == ["2", "3", "10"]     # numeric order for ints, not "10" < "2"
    assert label_order(["3", "cat", "-1"]) == ["-1", "3", "cat"]
    assert label_order(["b", "a", "b"]) == ["a", "b"]
    assert label_order(["1", "01", "007", "7"]) == ["01", "1", "007", "7"]     # never merged, never rewritten
    assert Multiclass.from_labels(["b", "a", "b"]).encode(["b", "a", "b"]).tolist() == [1, 0, 1]


@pytest.mark.parametrize("with_ext", [False, True])
def test_ids_with_or_without_extension(tmp_path, with_ext):
    root = make_competition(tmp_path / "c", with_ext=with_ext)
    table = train_table(cfg_for(root))
    assert len(table.ids) == 36 and all(p.is_file() and p.suffix == ".png" for p in table.paths)
    assert sorted(set(table.labels)) == ["cat", "dog", "fox"]
    assert len(submission_table(str(root)).paths) == 9


def _rewrite_train(root, rows):
    write_rows(root / "train.csv", ["image_id", "label"], rows)


def test_duplicate_id_names_both_lines(competition):
    _rewrite_train(competition, [("tr_0_0", "cat"), ("tr_0_1", "cat"), ("tr_0_0", "dog")])
    with pytest.raises(KitError, match=r"line 4: duplicate image id 'tr_0_0' \(first seen on line 2\)"):
        train_table(cfg_for(competition))


def test_missing_image_names_line(competition):
    _rewrite_train(competition, [("tr_0_0", "cat"), ("ghost", "cat")])
    with pytest.raises(KitError, match=r"train.csv line 3: image 'ghost' not found"):
        train_table(cfg_for(competition))


@pytest.mark.parametrize("image_id", ["../../etc/passwd", "/etc/passwd", "sub/../../x.png", "C:\\x.png"])
def test_ids_cannot_escape_the_images_folder(competition, image_id):
    _rewrite_train(competition, [("tr_0_0", "cat"), (image_id, "cat")])
    with pytest.raises(KitError, match="points outside the images folder"):
        train_table(cfg_for(competition))


def test_missing_column_and_empty_csv(competition):
    write_rows(competition / "train.csv", ["id", "label"], [("tr_0_0", "cat")])
    with pytest.raises(KitError, match=r"no column 'image_id' \(its columns: 'id', 'label'\)"):
        train_table(cfg_for(competition))
    (competition / "train.csv").write_text("")
    with pytest.raises(KitError, match="is empty"):
        train_table(cfg_for(competition))
    (competition / "train.csv").write_text("image_id,label\n")
    with pytest.raises(KitError, match="header but no rows"):
        train_table(cfg_for(competition))


def test_missing_csv_and_data_dir(competition):
    (competition / "train.csv").unlink()
    with pytest.raises(KitError, match="train.csv does not exist"):
        train_table(cfg_for(competition))
    with pytest.raises(KitError, match="data dir .* does not exist"):
        train_table(cfg_for(competition / "nope"))


def test_empty_label(competition):
    _rewrite_train(competition, [("tr_0_0", "cat"), ("tr_0_1", "")])
    table = train_table(cfg_for(competition))          # an image without tags is fine for a multilabel task...
    with pytest.raises(KitError, match=r"line 3: empty 'label'"):
        table.require_labels("label")                     # ...and refused for every other task


def test_corrupt_and_truncated_images_are_reported(competition):
    table = train_table(cfg_for(competition))
    table.paths[0].write_bytes(b"not an image at all")
    data = table.paths[1].read_bytes()
    table.paths[1].write_bytes(data[: len(data) // 2])
    with pytest.raises(KitError, match=r"2 image\(s\) cannot be decoded") as e:
        check_images_readable(table.paths)
    assert str(table.paths[0]) in str(e.value) and str(table.paths[1]) in str(e.value)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16"])
def test_any_image_mode_loads_as_rgb(tmp_path, mode):
    rgb = (np.arange(10 * 12 * 3) % 251).reshape(10, 12, 3).astype(np.uint8)
    image = Image.fromarray(rgb).convert(mode) if mode != "I;16" else Image.fromarray(rgb[..., 0].astype(np.uint16))
    path = tmp_path / "x.png"
    image.save(path)
    out = load_rgb(path, 20)
    assert out.shape == (20, 20, 3) and out.dtype == np.uint8


def test_load_rgb_error_names_the_file(tmp_path):
    path = tmp_path / "bad.jpg"
    path.write_bytes(b"\xff\xd8garbage")
    with pytest.raises(KitError, match="cannot read image .*bad.jpg"):
        load_rgb(path, 8)


def test_upper_case_and_gif_suffixes_are_tried(competition):
    images = competition / "train_images"
    (images / "tr_0_0.png").rename(images / "tr_0_0.JPG")
    from PIL import Image as PILImage
    PILImage.open(images / "tr_0_1.png").save(images / "tr_0_1.gif")
    (images / "tr_0_1.png").unlink()
    table = train_table(cfg_for(competition))
    found = dict(zip(table.ids, table.paths))
    assert found["tr_0_0"].name == "tr_0_0.JPG" and found["tr_0_1"].name == "tr_0_1.gif"
    assert load_rgb(found["tr_0_1"], 8).shape == (8, 8, 3)
