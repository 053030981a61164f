"""The project's error for users: a wrong input or configuration, reported plainly.

At the bottom of the package: every layer raises it, and only the command line
(:func:`scalselect.cli.main`) catches it, logging the message without a traceback.
"""


class UserError(Exception):
    """An error caused by the input or the configuration, reported without a traceback."""
