"""Pure reconcile functions: spec in, desired objects and status out (no I/O)."""
