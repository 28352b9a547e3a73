"""User-facing errors: one line that names the file, row or key and says what to do."""

import errno

# an OSError with one of these while writing outputs is the user's to fix (free space, permissions),
# not a bug: the runner and the commands say so in one line
DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES)


class UserError(Exception):
    """Bad input or configuration. The CLI prints it as one line and exits non-zero, no traceback."""
