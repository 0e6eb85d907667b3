"""HTTP API: management, regulator and public trace endpoints."""
