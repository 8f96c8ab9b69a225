"""A multi-region, active-active Bookstore that runs, fails over and measures itself on one machine."""

__version__ = "0.1.0"
