"""The run dir's files, in one place: its layout, saved setup and same-setup rule (rundir), OOF predictions and epoch
histories (oof), what best.pt / last.pt hold and the resume check (state), checkpoint file I/O (checkpoint), and the
one-trainer-per-fold lock (lock). Training writes them; evaluation, export and deployment read them.

Reads and writes: RUN/{config.yaml,classes.json,task.json,oof.csv}, RUN/fold<k>/{best.pt,last.pt,oof.csv,metrics.csv}.
"""
