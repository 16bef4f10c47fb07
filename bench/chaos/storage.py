"""Storage faults, two aggregators, and bad tables (filled in below)."""
