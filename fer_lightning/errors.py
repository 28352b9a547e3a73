"""User-facing errors: one line that names the file, row or key and says what to do."""


class UserError(Exception):
    """Bad input or configuration. The CLI prints it as one line and exits non-zero, no traceback."""
