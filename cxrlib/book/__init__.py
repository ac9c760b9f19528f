"""The book layer: tables, figures and experiments that only the chapters use.

Nothing in the library imports this package."""
