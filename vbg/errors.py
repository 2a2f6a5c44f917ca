"""The one exception type that reaches a person as a one-line message.

Library code raises :class:`VbgError` for anything the user can fix (a missing file,
a bad value, an absent device); the CLI prints it without a traceback and exits
non-zero. Anything else is a bug and keeps its traceback.
"""


class VbgError(Exception):
    """A problem the user can fix; the message names the thing and the fix."""
