"""The select step over an annotated pool: its typed config, the in-process driver (`run`) and the
sharded engine on Ray (`engine` drives the rounds, `shard` is the actor holding one block)."""
