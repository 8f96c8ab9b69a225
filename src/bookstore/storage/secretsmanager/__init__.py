"""Adapters on AWS Secrets Manager (the region's private signing keys where no disk is shared: Lambda)."""
