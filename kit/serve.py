"""`python -m kit.serve`: the HTTP service (kit/runtime/serve.py)."""
from kit.core.entry import main_guard
from kit.runtime.serve import main

if __name__ == "__main__":
    main_guard(main)
