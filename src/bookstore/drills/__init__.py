"""Failover drills: a workload through the edge, a fault schedule, and checks of RPO, RTO and loss."""
