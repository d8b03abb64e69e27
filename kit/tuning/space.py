"""The search space of `python -m kit.tune`: a YAML file naming Config fields (kit/settings/config.py), each with a
range or choices.

    lr_base: {low: 0.05, high: 0.8, log: true}        # a float field: a range (log: sampled on a log scale)
    epochs: {low: 4, high: 12}                         # an int field: an integer range (step: N optional)
    agc_clip: {choices: ["auto", "0.05", "0.2"]}       # any field: choices
    ema: {choices: [true, false]}

Every name, range and choice is checked before the first trial starts: an unknown field, a bad range or a value the
field refuses is one error line naming it.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kit.core.errors import KitError
from kit.settings.config import FIELDS, base_type, load_config

# fields a trial may not vary: they decide where a trial's files go, or which images each fold validates on
FIXED = {"data_dir", "run_dir", "folds_csv", "num_folds", "seed", "time_budget"}


@dataclass
class Param:
    name: str
    domain: str                     # float, int or choice
    low: Any = None
    high: Any = None
    log: bool = False
    step: Any = None
    choices: tuple = ()

    def point(self, value: Any) -> Any:
        """The space's own value equal to this value of the setting (a choice, or a number within the range and on
        its step), or None when the space does not hold it."""
        if self.domain == "choice":
            return next((c for c in self.choices if c == value and isinstance(c, bool) == isinstance(value, bool)),
                        None)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not self.low <= value <= self.high:
            return None
        if self.step is not None and abs((value - self.low) / self.step - round((value - self.low) / self.step)) > 1e-9:
            return None
        return value

    def suggest(self, trial) -> Any:
        """This setting's value for an Optuna trial."""
        if self.domain == "choice":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.domain == "int":
            return trial.suggest_int(self.name, self.low, self.high, step=self.step or 1, log=self.log)
        return trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log)


def read_space(path: str | Path, fixed: dict) -> list[Param]:
    """The parameters of the space file; `fixed`: the settings given on the command line (not searched)."""
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise KitError(f"--space {path}: cannot read it ({e.strerror})") from None
    except yaml.YAMLError as e:
        raise KitError(f"--space {path} is not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(raw, dict) or not raw:
        raise KitError(f"--space {path} must map setting names to a range or choices, e.g. "
                       f"lr_base: {{low: 0.05, high: 0.8, log: true}}")
    return [param(path, str(name), spec, fixed) for name, spec in raw.items()]


def param(path, name: str, spec, fixed: dict) -> Param:
    where = f"--space {path}: {name}"
    if name not in FIELDS:
        close = difflib.get_close_matches(name, FIELDS, 1)
        raise KitError(f"{where} is not a setting{f' (did you mean {close[0]}?)' if close else ''}; the settings are "
                       f"the fields of kit/settings/config.py")
    if name in FIXED:
        raise KitError(f"{where} cannot be searched: it decides where a trial's files go or which images it "
                       f"validates on; set it on the command line instead")
    if name in fixed:
        raise KitError(f"{where} is also given on the command line; drop one (a searched setting varies per trial)")
    if not isinstance(spec, dict) or not (("choices" in spec) ^ ("low" in spec and "high" in spec)):
        raise KitError(f"{where} needs either choices: [..] or low: and high: (with log: true or step: N optional)")
    kind = base_type(name)
    if "choices" in spec:
        choices = spec["choices"]
        if not isinstance(choices, list) or len(choices) < 2:
            raise KitError(f"{where}: choices must be a list of at least two values")
        for value in choices:                       # each value as the setting itself would take it
            try:
                load_config(None, {name: value})
            except KitError as e:
                raise KitError(f"{where}: the choice {value!r} is refused ({e})") from None
        return Param(name, "choice", choices=tuple(choices))
    if kind not in ("int", "float"):
        raise KitError(f"{where} is a {kind} setting: give choices, not a range")
    low, high, log, step = spec["low"], spec["high"], bool(spec.get("log", False)), spec.get("step")
    numbers = (int,) if kind == "int" else (int, float)
    if not all(isinstance(v, numbers) and not isinstance(v, bool) for v in (low, high)) or not low < high:
        raise KitError(f"{where}: low and high must be {'integers' if kind == 'int' else 'numbers'} with low < high "
                       f"(got {low!r} and {high!r})")
    if log and (low <= 0 or step is not None):
        raise KitError(f"{where}: a log range needs low > 0 and no step")
    for value in (low, high):
        try:
            load_config(None, {name: value})
        except KitError as e:
            raise KitError(f"{where}: the bound {value!r} is refused ({e})") from None
    return Param(name, kind, low, high, log, step)
