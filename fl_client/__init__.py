"""The hospital side: the trainer a user subclasses and the loop that answers rounds."""
