"""The one exception type the CLI turns into a one-line message and a non-zero exit."""


class NGEError(Exception):
    """A user-facing error: bad input, missing data, refused operation. The message is one line."""
