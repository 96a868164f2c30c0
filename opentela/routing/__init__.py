"""Routing decisions: pure functions over table snapshots. Never writes the table."""
