"""Where a run is recorded: MLflow runs, the offline spool, the names of every tag."""
