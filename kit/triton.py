"""`python -m kit.triton`: a Triton model repository from a kit graph (kit/deploy/triton.py)."""
from kit.core.entry import main_guard
from kit.deploy.triton import main

if __name__ == "__main__":
    main_guard(main)
