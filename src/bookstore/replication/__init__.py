"""Replication between regions: clocks, tables, objects, SQL."""
