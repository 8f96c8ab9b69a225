"""The AWS Lambda entry points of a region (the API, the best-sellers and search stream consumers) and their
wiring."""
