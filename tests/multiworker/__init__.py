"""Several `serve` processes on one PostgreSQL state (issue 14)."""
