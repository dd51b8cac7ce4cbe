"""Controllers: the logic that drives the adapters for one kind of object; handlers/ wires kopf to them."""
