"""Which task a training set's label cells describe (`--task auto`), and why; refused where the labels do not say."""
from __future__ import annotations

from typing import Sequence

from kit.core.errors import KitError
from kit.core.task.base import tags_of


def infer_kind(labels: Sequence[str], from_columns: bool = False) -> tuple[str, str]:
    """(task kind, why) from the label cells; refuse where they do not say."""
    if from_columns:
        return "multilabel", "one 0/1 column per tag"
    if any(not cell.strip() for cell in labels):
        return "multilabel", "some images have no label (an empty tag list)"
    numbers = []
    for cell in labels:
        try:
            numbers.append(float(cell))
        except ValueError:
            numbers = None
            break
    if numbers is not None:
        if any(not float(n).is_integer() for n in numbers):
            return "regression", "the labels are numbers with fractions"
        distinct = len(set(labels))                    # as classes: "1" and "01" are two, as classes.json lists them
        if distinct <= 20:
            return "multiclass", f"the labels are {distinct} distinct integers"
        raise KitError(f"the labels are integers with {distinct} distinct values: a score to predict, or "
                       f"{distinct} classes? Pass --task regression or --task multiclass")
    return _tags_or_names(labels)


def _tags_or_names(labels: Sequence[str]) -> tuple[str, str]:
    """Cells of several words are tag lists when every word of every such cell is also a label alone (Plant
    Pathology: "scab frog_eye" beside "scab" and "frog_eye"), class names when none of their words is ("Cassava
    Mosaic"). A mix ("big cat" beside "cat", but no "big") reads both ways: refused, asking for --task."""
    singles = {cell.strip() for cell in labels if len(tags_of(cell)) == 1}
    several = sorted({cell.strip() for cell in labels if len(tags_of(cell)) > 1})
    if not several:
        return "multiclass", "one label per image"
    alone = [cell for cell in several if set(tags_of(cell)) <= singles]
    partly = [cell for cell in several if set(tags_of(cell)) & singles and cell not in alone]
    if len(alone) == len(several):
        return "multilabel", "labels are space-separated tags that also occur alone"
    if not alone and not partly:
        return "multiclass", "one label per image (names with spaces)"
    example = (partly or alone)[0]
    words = [w for w in tags_of(example) if w in singles]
    raise KitError(f"the labels read two ways: {example!r} is one class, or the tags {tags_of(example)} ({words} "
                   f"also occur alone as labels). Pass --task multiclass (whole cells are classes) or --task multilabel "
                   f"(space-separated tags)")
