"""What a run dir scores, torch-free: the reports (report), one table of every run (runs), and blends on OOF
predictions (blend). The run dir's files themselves are kit.store's.

Reads: a run dir's files. Writes: cv.md, report.csv, the plots, blend.md.
"""
