"""`python -m kit.web`: the browser page (kit/deploy/web.py)."""
from kit.core.entry import main_guard
from kit.deploy.web import main

if __name__ == "__main__":
    main_guard(main)
