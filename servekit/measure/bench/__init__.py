"""`servekit bench`: served throughput and latency, side by side with baselines and ceilings."""
