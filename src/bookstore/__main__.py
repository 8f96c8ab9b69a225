"""`python -m bookstore` runs the command-line interface."""

from bookstore.cli import main

main()
