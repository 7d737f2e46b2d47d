"""User-facing errors: the CLI prints their message on one line and exits with code 2."""

import difflib


class DiffnasError(Exception):
    """A problem with the user's input, data or config, not a bug in diffnas."""


class DataError(DiffnasError):
    pass


class ConfigError(DiffnasError):
    pass


class GenotypeError(DiffnasError):
    pass


class TrainingDiverged(DiffnasError):
    pass


def did_you_mean(name, choices) -> str:
    """`` (did you mean 'x'?)`` for the choice closest to a mistyped ``name``, or nothing when none is close."""
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""
