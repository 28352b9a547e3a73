"""User-facing errors: one line that names the file, row or key and says what to do."""

import errno

# an OSError with one of these while writing outputs is the user's to fix (free space, permissions),
# not a bug: the runner and the commands say so in one line
DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES)


class UserError(Exception):
    """Bad input or configuration. The CLI prints it as one line and exits non-zero, no traceback."""


class InvalidConfigValue(UserError, ValueError):
    """A class's own check of one of its arguments failed (``model.ema_decay: ...``), seen while a
    config was instantiated: one line like any UserError, and still a ValueError for the pipeline's
    config check, which names the stage."""
