"""authserver: the JWKS authorization server around the ``keys`` core."""

__version__ = "0.1.0"
