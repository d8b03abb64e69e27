"""User-facing errors: the entry points print these as one line and exit 2, without a traceback."""


class KitError(Exception):
    """Bad input or setup the user can fix. The message says what is wrong, where, and how to fix it."""


EXIT_USER_ERROR = 2
