"""Tests of `frugal serve`, the OpenAI-compatible HTTP server."""
