"""The application: the CLI, the settings resolver, table, plots, sweeps, export and the benchmark."""
