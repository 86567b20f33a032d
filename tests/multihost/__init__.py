"""Multi-host tests: each service in its own network namespace, joined by veth pairs on a bridge."""
