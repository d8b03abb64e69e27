"""Training (torch): one fold (fold.Trainer over model, agc, augment, loader, batch, objective, state, device,
distributed, lock, checkpoint) and a run of folds (run).

Reads: the competition folder, folds.csv, settings. Writes: RUN/fold<k>/{best.pt,last.pt,oof.csv,metrics.csv,
config.yaml} (checkpoint contents: state.py) and the run's config.yaml, classes.json, task.json.
"""
