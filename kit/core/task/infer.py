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
        distinct = len(set(numbers))
        if distinct <= 20:
            return "multiclass", f"the labels are {distinct} distinct integers"
        raise KitError(f"the labels are integers with {distinct} distinct values: a score to predict, or "
                       f"{distinct} classes? Pass --task regression or --task multiclass")
    singles = {cell.strip() for cell in labels if len(tags_of(cell)) == 1}
    if any(len(tags_of(cell)) > 1 and set(tags_of(cell)) & singles for cell in labels):
        return "multilabel", "labels are space-separated tags that also occur alone"
    return "multiclass", "one label per image"
