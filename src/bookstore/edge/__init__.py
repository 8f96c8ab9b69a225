"""The edge (Route 53 + CloudFront): health checks, routing records, origin failover, DNS, one address."""
