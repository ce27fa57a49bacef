"""`mig-ray compare`: MIG beside the baselines a curator would try, on the same selectable records.

Each method is a module with one interface, `select(pool, k, seed) -> order` (positions into the
pool, best first); `metrics` measures every order the same way; `run` ties them together.
"""
