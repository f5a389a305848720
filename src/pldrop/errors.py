"""The one exception type for mistakes a user can make (paths, configs, data).

The command line catches :class:`UserError`, prints its message on one line and exits with
code 2; library callers get an ordinary exception (a ``ValueError`` subclass) they can catch.
"""


class UserError(ValueError):
    """A problem with the user's input: message names the bad value and what is accepted.

    The message is kept to one line: line breaks (e.g. from a library's error text quoted in
    it) are joined with spaces, so the command line's "one line, exit 2" always holds.

    >>> str(UserError("config file 'c.yaml' is not valid YAML: mapping values\\n  in line 3"))
    "config file 'c.yaml' is not valid YAML: mapping values in line 3"
    """

    def __init__(self, message: object = "", *args: object):
        text = str(message)
        if "\n" in text or "\r" in text:
            text = " ".join(line.strip() for line in text.splitlines() if line.strip())
        super().__init__(text, *args)
