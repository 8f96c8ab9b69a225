"""Tests of the Bookstore."""
