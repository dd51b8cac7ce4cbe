"""Controllers: the logic that drives the adapters for one kind of object, between kopf's handlers (which
only unpack arguments) and the pure decisions of ``reconcile/``. One module per kind of object; no kopf."""
