"""Per-hospital tabular data behind one interface, so that sources drop in."""
