"""The replicated service table: one signed record per node, merged deterministically."""
