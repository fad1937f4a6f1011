"""The pure core of Kubeline: specs, the DAG, states and schedules (stdlib + pydantic + croniter only)."""
