"""Controllers: the logic driving the adapters for one kind of object; kopf-free, wired by handlers/."""
