"""Claims queued jobs and runs them on an executor; heartbeats, cancellation, recovery."""
