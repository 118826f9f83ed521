"""Errors that reach users: each carries a message that names the problem, not a stack trace."""


class DqeError(Exception):
    """Base class for errors that dqe reports to users with a clear message."""


class ConfigError(DqeError):
    """The configuration is invalid: the message names the key and the file."""


class InputError(DqeError):
    """The input data cannot be processed as configured: the message names the problem."""


class StageError(DqeError):
    """A pipeline stage failed; the message names the stage, earlier tables are intact."""
