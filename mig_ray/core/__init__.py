"""The method itself, pure numpy/scipy/numba: label graph, sample vectors, objective, lazy greedy
and the certified rounds of the sharded greedy. Nothing here knows of Ray, files or the job."""
