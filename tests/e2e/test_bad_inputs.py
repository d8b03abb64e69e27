"""The bad-input matrix: every user mistake ends with exit code 2, one `error:` line that names the file, row
or flag and says what to do, no traceback, and nothing half-written."""
import re
import shutil

import pytest
from PIL import Image

from helpers import TINY, assert_user_error, csv_rows, make_competition, run_entry, save_crafted_checkpoint, write_rows
from kit.settings.config import load_config
from kit.core.table import train_table
from kit.prepare.folds import load_or_create


def train_cmd(comp, tmp, *extra):
    return ["train.py", "--data-dir", comp, "--run-dir", tmp / "run", "--folds-csv", tmp / "folds.csv",
            "--num-folds", "2", *TINY, "--epochs", "1", *extra]


def set_train_rows(comp, rows, header=("image_id", "label")):
    write_rows(comp / "train.csv", list(header), rows)


def case_missing_data_dir(comp, tmp):
    return train_cmd(tmp / "nowhere", tmp), r"data dir .*nowhere does not exist; pass --data-dir"


def case_missing_train_csv(comp, tmp):
    (comp / "train.csv").unlink()
    return train_cmd(comp, tmp), r"train.csv does not exist\. Put the competition's train.csv in"


def case_empty_train_csv(comp, tmp):
    (comp / "train.csv").write_text("")
    return train_cmd(comp, tmp), r"train.csv is empty; it needs a header row"


def case_missing_label_column(comp, tmp):
    set_train_rows(comp, [r[:1] for r in csv_rows(comp / "train.csv")[1:]], header=("image_id",))
    return train_cmd(comp, tmp), r"train.csv has no column 'label' \(its columns: 'image_id'\).*label_col"


def case_missing_id_column(comp, tmp):
    set_train_rows(comp, csv_rows(comp / "train.csv")[1:], header=("id", "label"))
    return train_cmd(comp, tmp), r"train.csv has no column 'image_id'"


def case_duplicate_ids(comp, tmp):
    rows = csv_rows(comp / "train.csv")[1:]
    set_train_rows(comp, rows + [rows[3]])
    return train_cmd(comp, tmp), rf"train.csv line {len(rows) + 2}: duplicate image id '{rows[3][0]}' \(first seen on line 5\)"


def case_listed_image_missing(comp, tmp):
    rows = csv_rows(comp / "train.csv")[1:]
    next((comp / "train_images").glob(f"{rows[6][0]}*")).unlink()
    return train_cmd(comp, tmp), rf"train.csv line 8: image '{rows[6][0]}' not found in .*train_images"


def case_corrupt_image(comp, tmp):
    victim = sorted((comp / "train_images").iterdir())[2]
    victim.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    return train_cmd(comp, tmp), rf"1 image\(s\) cannot be decoded: {re.escape(str(victim))}.*Replace these files"


def case_truncated_image(comp, tmp):
    victim = sorted((comp / "train_images").iterdir())[4]
    Image.open(victim).convert("RGB").resize((64, 64)).save(victim.with_suffix(".jpg"), quality=90)
    victim.unlink()
    data = victim.with_suffix(".jpg").read_bytes()
    victim.with_suffix(".jpg").write_bytes(data[: len(data) // 2])
    return train_cmd(comp, tmp), rf"cannot be decoded: {re.escape(str(victim.with_suffix('.jpg')))}: OSError"


def write_folds(comp, tmp):
    table = train_table(load_config(None, {"data_dir": str(comp)}))
    load_or_create(tmp / "folds.csv", table, table.labels, 2, seed=42)


def case_folds_label_not_in_train(comp, tmp):
    write_folds(comp, tmp)
    rows = csv_rows(tmp / "folds.csv")[1:]
    rows[0][1] = "unicorn"
    write_rows(tmp / "folds.csv", ["image_id", "label", "fold"], rows)
    return train_cmd(comp, tmp), rf"folds.csv: image '{rows[0][0]}' has label 'unicorn' but .*train.csv line 2 says"


def case_folds_out_of_date(comp, tmp):
    write_folds(comp, tmp)
    rows = csv_rows(comp / "train.csv")[1:]
    set_train_rows(comp, rows[:-2])
    return train_cmd(comp, tmp), r"folds.csv is out of date: 2 id\(s\) in it are no longer in .*To re-split, delete"


def case_fold_out_of_range(comp, tmp):
    return train_cmd(comp, tmp, "--fold", "2"), r"--fold 2 is out of range: .*folds.csv has 2 folds \(0\.\.1\)"


def case_class_too_small(comp, tmp):
    rows = csv_rows(comp / "train.csv")[1:]
    rows[0][1] = "rare"
    set_train_rows(comp, rows)
    return train_cmd(comp, tmp), r"too few images for 2 folds in class 'rare' \(1 image\).*Every class needs at least 2; merge or remove"


def case_id_escapes_images_dir(comp, tmp):
    rows = csv_rows(comp / "train.csv")[1:]
    set_train_rows(comp, rows + [["../../etc/passwd", "cat"]])
    return train_cmd(comp, tmp), r"image id '\.\./\.\./etc/passwd' points outside the images folder"


def case_unknown_config_key(comp, tmp):
    (tmp / "c.yaml").write_text("learning_rate: 0.1\n")
    return train_cmd(comp, tmp, "--config", tmp / "c.yaml"), r"c.yaml: unknown setting 'learning_rate'"


def case_crafted_pretrained_file(comp, tmp):
    marker = tmp / "pwned"
    save_crafted_checkpoint(tmp / "evil.pth", "stem.conv1.weight", marker)
    return train_cmd(comp, tmp, "--pretrained-file", tmp / "evil.pth"), \
        r"refusing to load .*evil.pth: it contains pickled objects.*could run arbitrary code"


def case_missing_value_as_label(comp, tmp):
    rows = csv_rows(comp / "train.csv")[1:]
    rows[4][1] = "nan"
    set_train_rows(comp, rows)
    return train_cmd(comp, tmp), r"train.csv line 6: 'label' is 'nan', the text of a missing value"


def case_none_as_label(comp, tmp):
    rows = csv_rows(comp / "train.csv")[1:]
    rows[0][1] = "None"
    set_train_rows(comp, rows)
    return train_cmd(comp, tmp), r"train.csv line 2: 'label' is 'None', the text of a missing value"


def case_one_class(comp, tmp):
    set_train_rows(comp, [[r[0], "cat"] for r in csv_rows(comp / "train.csv")[1:]])
    return train_cmd(comp, tmp), r"the training labels hold only one class \('cat'\); a classifier needs at least two"


def case_line_numbers_count_blank_lines(comp, tmp):
    rows = csv_rows(comp / "train.csv")[1:]
    lines = ["image_id,label", "", *(",".join(r) for r in rows[:3]), "", "", ",".join(rows[1])]
    (comp / "train.csv").write_text("\n".join(lines) + "\n")
    return train_cmd(comp, tmp), rf"train.csv line 8: duplicate image id '{rows[1][0]}' \(first seen on line 4\)"


def case_id_with_and_without_suffix(comp, tmp):
    rows = csv_rows(comp / "train.csv")[1:]
    set_train_rows(comp, rows + [[rows[2][0] + ".png", rows[2][1]]])
    return train_cmd(comp, tmp), (rf"train.csv line {len(rows) + 2}: image id '{rows[2][0]}.png' names the same file "
                                  rf"\({rows[2][0]}.png\) as line 4 \('{rows[2][0]}'\)")


def _grouped(comp, group_of):
    rows = csv_rows(comp / "train.csv")[1:]
    set_train_rows(comp, [[r[0], r[1], group_of(i, r)] for i, r in enumerate(rows)], ("image_id", "label", "patient"))


def case_empty_group_ids(comp, tmp):
    _grouped(comp, lambda i, r: "" if i % 4 == 0 else f"p{i}")
    return train_cmd(comp, tmp, "--group-col", "patient"), \
        (r"train.csv line 2: 'patient' is empty or the text of a missing value \(4 row\(s\) in all\); such group "
         r"ids would all form one group")


def case_more_folds_than_groups(comp, tmp):
    _grouped(comp, lambda i, r: "only-patient")
    return train_cmd(comp, tmp, "--group-col", "patient"), r"2 folds need at least 2 groups, but there are 1"


def case_class_in_one_group(comp, tmp):
    _grouped(comp, lambda i, r: r[1] if r[1] == "fox" else f"p{i}")
    return train_cmd(comp, tmp, "--group-col", "patient"), \
        r"too few groups for 2 folds in class 'fox' \(1 group\)"


def case_negative_seed(comp, tmp):
    return train_cmd(comp, tmp, "--seed", "-1"), r"invalid setting: seed must be in 0"


def case_probability_above_one(comp, tmp):
    return train_cmd(comp, tmp, "--aug-hflip", "1.5"), r"aug_hflip is a probability and must be in \[0, 1\], got 1.5"


def case_label_smoothing_above_one(comp, tmp):
    return train_cmd(comp, tmp, "--label-smoothing", "1.5"), r"label_smoothing must be in \[0, 1\)"


def case_binary_config(comp, tmp):
    (tmp / "c.yaml").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe binary")
    return train_cmd(comp, tmp, "--config", tmp / "c.yaml"), r"c.yaml is not a text file .*pass a UTF-8 YAML file"


CASES = [case_missing_data_dir, case_missing_train_csv, case_empty_train_csv, case_missing_label_column,
         case_missing_id_column, case_duplicate_ids, case_listed_image_missing, case_corrupt_image,
         case_truncated_image, case_folds_label_not_in_train, case_folds_out_of_date, case_fold_out_of_range,
         case_class_too_small, case_id_escapes_images_dir, case_unknown_config_key, case_crafted_pretrained_file,
         case_missing_value_as_label, case_none_as_label, case_one_class, case_line_numbers_count_blank_lines,
         case_id_with_and_without_suffix, case_empty_group_ids, case_more_folds_than_groups, case_class_in_one_group,
         case_negative_seed, case_probability_above_one, case_label_smoothing_above_one, case_binary_config]


@pytest.mark.parametrize("case", CASES, ids=[c.__name__[5:] for c in CASES])
def test_training_input_errors(case, tmp_path, capsys):
    comp = make_competition(tmp_path / "comp", per_class=5)
    args, pattern = case(comp, tmp_path)
    folds_before = (tmp_path / "folds.csv").read_bytes() if (tmp_path / "folds.csv").exists() else None
    assert_user_error(run_entry(capsys, *args), pattern)
    assert not (tmp_path / "run" / "fold1").exists()
    if folds_before is not None:                            # an error never rewrites an existing split
        assert (tmp_path / "folds.csv").read_bytes() == folds_before
    assert not (tmp_path / "pwned").exists()


def test_grayscale_and_rgba_images_just_work(tmp_path, capsys):
    comp = make_competition(tmp_path / "comp", per_class=5)
    images = sorted((comp / "train_images").iterdir())
    for path, mode in zip(images, ["L", "RGBA", "P", "LA"] * 5):
        Image.open(path).convert(mode).save(path)
    r = run_entry(capsys, *train_cmd(comp, tmp_path, "--fold", "0"))
    assert r.returncode == 0, r.stderr


def test_sample_submission_ids_not_in_test_images(onnx_file, trained, tmp_path, capsys):
    comp = tmp_path / "comp"
    shutil.copytree(trained[0], comp)
    rows = csv_rows(comp / "sample_submission.csv")[1:]
    write_rows(comp / "sample_submission.csv", ["image_id", "label"], rows[:3] + [["te_404", "cat"]] + rows[3:])
    r = run_entry(capsys, "infer.py", "--onnx", onnx_file, "--data-dir", comp, "--out", tmp_path / "s.csv")
    assert_user_error(r, r"sample_submission.csv line 5: image 'te_404' not found in .*test_images")
    assert not (tmp_path / "s.csv").exists()


def test_onnx_from_another_run(onnx_file, tmp_path, capsys):
    other = make_competition(tmp_path / "other", classes=("ant", "bee"), per_class=4)
    r = run_entry(capsys, "infer.py", "--onnx", onnx_file, "--data-dir", other, "--out", tmp_path / "s.csv")
    assert_user_error(r, r"was exported for 3 classes \['cat', 'dog', 'fox'\] but .*train.csv has 2 classes "
                         r"\['ant', 'bee'\]: it comes from another run")
    assert not (tmp_path / "s.csv").exists()


def test_checkpoint_of_another_architecture(trained, tmp_path, capsys):
    from kit.store import checkpoint
    run = tmp_path / "run"
    shutil.copytree(trained[1], run)
    (run / "ensemble.onnx").unlink(missing_ok=True)     # an export of the shared run by a test that ran before
    ckpt = checkpoint.load(run / "fold1" / "best.pt")
    ckpt["config"]["model"] = "nf_resnet26"
    checkpoint.save(ckpt, run / "fold1" / "best.pt")
    r = run_entry(capsys, "infer.py", "--run-dir", run, "--folds", "1", "--export-only")
    assert_user_error(r, r"fold1/best.pt does not match model 'nf_resnet26' with 3 classes")
    assert not (run / "ensemble.onnx").exists()
    r = run_entry(capsys, "train.py", "--data-dir", trained[0], "--run-dir", run, "--folds-csv", trained[2], "--fold", "1",
                "--model", "nf_resnet26", "--resume")
    assert_user_error(r, r"cannot resume fold 1: (recipe: [^;]*; )?model: 'test_nfnet' -> 'nf_resnet26'")


def test_crafted_checkpoint_in_a_run_dir(trained, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained[1], run)
    (run / "ensemble.onnx").unlink(missing_ok=True)     # an export of the shared run by a test that ran before
    marker = tmp_path / "pwned"
    save_crafted_checkpoint(run / "fold0" / "best.pt", "model", marker)
    r = run_entry(capsys, "infer.py", "--run-dir", run, "--export-only")
    assert_user_error(r, r"refusing to load .*fold0/best.pt: it contains pickled objects")
    assert not marker.exists() and not (run / "ensemble.onnx").exists()


@pytest.mark.parametrize("args,pattern", [
    (["--batch-size", "0"], r"argument --batch-size: '0' is outside 1\.\.inf"),
    (["--batch-size", "-1"], r"argument --batch-size: '-1' is outside 1\.\.inf"),
    (["--folds", "0,0"], r"--folds lists a fold twice \(\[0, 0\]\)"),
    (["--folds", "1,x"], r"--folds must be comma-separated fold numbers or 'full', got '1,x'"),
    (["--int8", "--fp16"], r"--int8 and --fp16 ask for two different twins of the graph; pass one"),
])
def test_infer_settings_errors(trained, tmp_path, capsys, args, pattern):
    r = run_entry(capsys, "infer.py", "--run-dir", trained[1], "--out", tmp_path / "s.csv", "--onnx-out",
                  tmp_path / "e.onnx", *args)
    assert_user_error(r, pattern)
    assert not (tmp_path / "s.csv").exists() and not (tmp_path / "e.onnx").exists()


def test_out_pointing_at_a_directory(onnx_file, trained, tmp_path, capsys):
    r = run_entry(capsys, "infer.py", "--onnx", onnx_file, "--data-dir", trained[0], "--out", tmp_path)
    assert_user_error(r, rf"--out {re.escape(str(tmp_path))} is a folder; give a file path")


def test_checkpoint_without_its_config(trained, tmp_path, capsys):
    from kit.store import checkpoint
    run = tmp_path / "run"
    shutil.copytree(trained[1], run)
    ckpt = checkpoint.load(run / "fold0" / "best.pt")
    del ckpt["config"]
    checkpoint.save(ckpt, run / "fold0" / "best.pt")
    r = run_entry(capsys, "infer.py", "--run-dir", run, "--export-only")
    assert_user_error(r, r"fold0/best.pt is not a fold checkpoint of this kit \(no 'config'\); retrain the fold")
