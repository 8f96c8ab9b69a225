"""`bookstore up`: the supervisor process (regions, links, the edge, control API) and its launcher."""
