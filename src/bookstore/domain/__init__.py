"""Pure domain objects and rules: no I/O, no framework, no driver."""
