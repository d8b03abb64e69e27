"""Before training: the persisted stratified split (folds) and the embedded demo competitions (demo).

Reads: the competition table and the task's stratification key. Writes: folds/folds.csv; data/digits*/.
"""
