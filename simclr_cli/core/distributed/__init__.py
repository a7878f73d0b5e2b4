"""Several processes: ranks, collectives, global batch norm and the launcher."""
