"""Ray shell around the sharded core: shard actors, the driver's rounds, checkpoints."""
