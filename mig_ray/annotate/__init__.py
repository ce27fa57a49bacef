"""Annotation: taggers and scorers as Ray Data callable classes, and the cache of their results."""
