"""Table replication between regions: model, wire (JSON), http (endpoints and peer), replicator."""
