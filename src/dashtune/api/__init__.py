"""HTTP only: parses requests, calls services, renders DashScope envelopes."""
