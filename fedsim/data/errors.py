"""The one exception type of the data layer."""


class DataError(ValueError):
    """Bad data or bad data arguments.

    A ValueError subclass so callers that already guard against ValueError keep working,
    while the engine can tell data problems apart from its own bugs.
    """
