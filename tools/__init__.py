"""The project's tools (dataset builder, benchmark runner, table and plot makers; not algorithms).

Each runs as a module from the project root: `python -m tools.make_datasets`, `python -m tools.sweep`,
`python -m tools.make_results`, ... (every module's docstring gives its commands)."""
