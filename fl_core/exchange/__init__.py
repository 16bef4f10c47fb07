"""The exchange: the only way anything crosses a trust boundary. Only this package builds keys."""
