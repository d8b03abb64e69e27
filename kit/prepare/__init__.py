"""Before training: the persisted stratified split (folds), the embedded demo competitions (demo), and
what skewed classes call for (imbalance).

Reads: the competition table and the task's stratification key. Writes: folds/folds.csv; data/digits*/.
"""
