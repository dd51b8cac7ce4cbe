"""Controllers: the logic that drives the adapters for one kind of object (kopf-free; handlers/ wires them)."""
