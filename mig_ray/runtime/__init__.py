"""How work runs, knowing nothing of MIG: the Ray session (start, join, tasks, logs) and actor
placement. The floor every Ray-using package stands on."""
