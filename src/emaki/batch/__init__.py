"""`emaki batch`: a file of generation parameters run as one resumable batch (`spec` reads and
checks it, `run` runs it on an executor, `summary` keeps its summary.csv)."""
