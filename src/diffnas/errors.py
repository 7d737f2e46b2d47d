"""User-facing errors: the CLI prints their message on one line and exits with code 2."""


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
