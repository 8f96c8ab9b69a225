"""The shared kernel: clocks, peer authentication, errors with their HTTP status, JSON responses."""
