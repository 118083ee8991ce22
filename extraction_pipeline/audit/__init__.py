"""Questions answered from Dagster's storage: where documents stand, what happened to one."""
