"""Everything about more than one process: batch arithmetic over the world size, strategies."""
