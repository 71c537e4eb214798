"""The data layer's exception (defined with the others in fedsim.errors)."""

from fedsim.errors import DataError

__all__ = ["DataError"]
