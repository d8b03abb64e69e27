"""`python -m kit.bundle`: the offline Kaggle bundle (kit/deploy/bundle.py)."""
from kit.core.entry import main_guard
from kit.deploy.bundle import main

if __name__ == "__main__":
    main_guard(main)
