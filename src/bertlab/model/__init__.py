"""The transformer encoder (backbone) and its task heads."""
