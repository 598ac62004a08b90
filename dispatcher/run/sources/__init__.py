"""Where a run's batches come from (`core.ports.BatchSource`): the jobs files read here (`local`), or
the claims of a run shared in PostgreSQL (`claims`). The runner picks one; the engine knows neither."""
