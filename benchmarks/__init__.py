"""Speed and memory measurements of the pipeline (`python -m benchmarks.run`), as ratios within one run."""
