"""User-facing errors: raised for bad input, printed as one line without a traceback."""


class ToolturnError(Exception):
    """An error caused by the user's input (config, files, data). The CLI prints `error: <message>`."""


class ToolCallError(Exception):
    """A tool call that cannot be executed. Never escapes a dialogue: it becomes a tool message."""
