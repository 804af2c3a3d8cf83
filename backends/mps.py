"""`dt.backends.mps`: Apple's Metal backend, which dtrain does not have."""


def is_available():
    return False


def is_built():
    return False
