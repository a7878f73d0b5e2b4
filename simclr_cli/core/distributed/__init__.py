"""Several processes: ranks, collectives and the launcher."""
