"""The job queue of the engine layer: a SQLite store, the worker loop, and the executors it
hands jobs to. The server (and any batch runner) builds on it."""
