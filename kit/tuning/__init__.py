"""Searching train.py's settings: the space file (space.py) and the Optuna study over trials that are run dirs
(study.py)."""
