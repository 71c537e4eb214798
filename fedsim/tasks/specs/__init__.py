"""One module per task, each registering its TaskSpec (fedsim.tasks.registry)."""
