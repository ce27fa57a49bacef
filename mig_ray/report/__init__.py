"""`mig-ray report`: what a selection covers, as a self-contained HTML page and a summary.json.

`stats` holds the report data both selection engines compute beside a selection (cheap: curve
points, label counts, a score histogram); `build` reads a selection's outputs and renders them.
"""
