"""`servekit tune`: search TorchServe's batching, workers and the handler's threads for one archive on this
machine, against a real TorchServe, and write the winner into the archive's model-config.yaml."""
