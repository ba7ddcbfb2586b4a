"""One module per CLI subcommand; see accelvit.cli."""
