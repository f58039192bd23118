"""The chaos suite: real redis-server and worker processes, a fault proxy and a job ledger."""
