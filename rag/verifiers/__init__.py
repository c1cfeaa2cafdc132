"""Checks between a generated answer and the user: sandboxed execution, test-based and learned selection, grounding."""
