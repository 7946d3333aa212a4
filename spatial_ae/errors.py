"""Errors the user can fix: the command line prints their message, not a traceback."""


class UserError(Exception):
    """Bad input or set-up; the message names the file or parameter and the fix."""


class SimulationsFailed(RuntimeError):
    """Some simulations failed (each already logged with its traceback); the others' results are kept."""
