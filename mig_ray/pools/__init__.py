"""Reading and writing pools: layouts, ids, rejects."""
