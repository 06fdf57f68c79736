"""The root of ilma's exceptions: every error ilma raises on purpose derives from IlmaError."""


class IlmaError(Exception):
    """Base of all ilma errors; each concrete error also subclasses the fitting builtin."""
