"""What both sides of a federation share: config, codec, exchange, aggregation, metrics, data."""
