"""The merchant dashboard: server-rendered pages under /dashboard/, calling the same use cases as the API."""
