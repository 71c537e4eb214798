"""Tasks: how one hospital trains and evaluates (fedsim.tasks.base.Task)."""
