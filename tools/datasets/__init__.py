"""The dataset builder's parts (its command: python -m tools.make_datasets): recipe, store, table."""
