"""Use cases behind the dashboard API: each checks access first, then acts in one unit of work."""
