"""The one exception type for mistakes a user can make (paths, configs, data).

The command line catches :class:`UserError`, prints its message on one line and exits with
code 2; library callers get an ordinary exception (a ``ValueError`` subclass) they can catch.
"""


class UserError(ValueError):
    """A problem with the user's input: message names the bad value and what is accepted."""
