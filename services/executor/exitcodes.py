"""Exit codes a handler process uses to tell its executor why it stopped."""

EXIT_TIMED_OUT = 75
"""A plain handler ran past the API's timeout in a thread that cannot be stopped: restart the process at once."""

EXIT_INIT_FAILED = 3
"""The handler could not be loaded or its `__init__` raised; the traceback went to the executor first."""
