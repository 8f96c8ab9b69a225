"""Data shipped with the package: the seed catalog and its cover images."""
