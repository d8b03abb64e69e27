"""The ground floor, torch-free at import: what every stage and the shipped predictor share.

errors, log, entry (one-line errors, exit 2), atomic (write-temp-rename), images (the one decoder), table (the
competition folder's CSVs and image files), task (what a label is: encoding, loss, activation, metrics,
decisions, submission cells, the JSON answer), metrics, artifact (the exported graph's contract).

Reads: train.csv, sample_submission.csv, image files. Writes: nothing itself; every stage writes through atomic.
"""
