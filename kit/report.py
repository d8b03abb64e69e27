"""`python -m kit.report`: rebuild a run dir's reports (kit/evaluate/report.py)."""
from kit.core.entry import main_guard
from kit.evaluate.report import main

if __name__ == "__main__":
    main_guard(main)
