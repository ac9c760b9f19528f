"""cxrlib."""
