"""Settings: every training knob as a named value (config), its command-line flag (cli), named recipes.

Reads: defaults, a recipe, a --config YAML file, flags. Writes: config.yaml (the resolved Config; config.py).
"""
