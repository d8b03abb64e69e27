"""Training (torch): one fold (fold.Trainer over model, agc, augment, loader, batch, objective, step, device,
distributed, budget) and a run of folds (run); the run dir's files through kit.store.

Reads: the competition folder, folds.csv, settings. Writes: RUN/fold<k>/{best.pt,last.pt,oof.csv,metrics.csv,
config.yaml} (checkpoint contents: kit/store/state.py) and the run's config.yaml, classes.json, task.json.
"""
