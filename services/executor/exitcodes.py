"""Exit codes a handler process uses to tell its executor why it stopped."""

EXIT_TIMED_OUT = 75
"""A plain handler ran past the API's timeout in a thread that cannot be stopped: restart the process at once."""
