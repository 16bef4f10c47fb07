"""The coordinating side: the aggregator a user subclasses and the round loop."""
