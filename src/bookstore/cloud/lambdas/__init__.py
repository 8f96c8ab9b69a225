"""The AWS Lambda entry points of a region (the API, the best-sellers stream consumer) and their wiring."""
