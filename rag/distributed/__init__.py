"""Running the library's work on a Ray cluster (a local one when no address is given)."""
