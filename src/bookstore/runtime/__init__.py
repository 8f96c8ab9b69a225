"""Processes: the region server, the supervisor, links and the edge."""
