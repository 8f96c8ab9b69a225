"""The region process: its composition root (compose), serving (process), faults, operator commands."""
