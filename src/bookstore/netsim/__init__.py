"""The network simulator process part: the links between regions (proxy, simulator, control API)."""
