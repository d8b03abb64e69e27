"""What a run dir holds and what it scores, torch-free: the run dir's layout and one same-setup rule (rundir),
OOF predictions and epoch histories (oof), the reports (report), and blends on OOF predictions (blend).

Reads: a run dir's files. Writes: oof.csv, metrics.csv, config.yaml/classes.json/task.json, cv.md and the plots.
"""
