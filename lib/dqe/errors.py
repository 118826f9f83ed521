"""Errors that reach users: each carries a message that names the problem, not a stack trace."""


class DqeError(Exception):
    """Base class for errors that dqe reports to users with a clear message."""


class ConfigError(DqeError):
    """The configuration is invalid: the message names the key and the file."""


class InputError(DqeError):
    """The input data cannot be processed as configured: the message names the problem."""


class StageError(DqeError):
    """A pipeline stage failed; the message names the stage, earlier tables are intact."""


SPARK_ERRORS: tuple[type[BaseException], ...]
try:
    from py4j.protocol import Py4JJavaError
    from pyspark.errors import PySparkException

    SPARK_ERRORS = (PySparkException, Py4JJavaError)
except ImportError:  # the algorithms are usable without Spark
    SPARK_ERRORS = ()


def describe_spark_error(exc: BaseException) -> str:
    """One readable line for a Spark/JVM error: the innermost Java cause's message, or the error's first line."""
    java = getattr(exc, "java_exception", None)
    if java is not None:
        try:
            cause = java
            while cause.getCause() is not None:
                cause = cause.getCause()
            message = cause.getMessage()
            if message:
                return str(message).strip().splitlines()[0]
        except Exception:  # the JVM may be gone; fall back to the Python text
            pass
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
