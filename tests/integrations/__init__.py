"""Framework integration tests: each module skips when its framework is not installed."""
