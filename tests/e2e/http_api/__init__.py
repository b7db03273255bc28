"""The HTTP API (README, "The HTTP API"), line by line: real Envoy in front of the real services, over HTTP."""
