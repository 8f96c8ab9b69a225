"""Object replication between regions: the replicator, and the requests between regions' S3 ports
(wire format, client, server endpoints).
"""
