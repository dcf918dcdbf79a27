"""Portrait: an open-source user-profile lakehouse for e-commerce."""

__version__ = "0.1.0"
