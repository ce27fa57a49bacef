"""Curation before selection, as pure functions over numpy and Arrow (no Ray, no job):

- `text`: which turns count and how a conversation is normalised (NFKC, case-folded, whitespace
  collapsed), its words, and the 64-bit hashes that name a normalised text;
- `minhash`: word n-gram shingles, MinHash signatures (datasketch's affine32 scheme, from a block of
  texts in one compiled pass: `compiled`), LSH band keys and the recall a banding gives;
- `lsh`: the candidate pairs of one bucket of band rows, and their verification on signatures;
- `clusters`: connected components of the verified pairs, the lowest position of each kept;
- `contamination`: the word n-gram index of benchmark prompts and its matches.

The job's `dedup` stage (mig_ray/job/dedup.py) runs these in Ray tasks where the data is.
"""
