"""The one exception type for bad data, so the CLI can print it without a traceback."""


class DataError(ValueError):
    """A dataset, image or layout problem; the message says what, where and how to fix it."""
