"""The Ray side of sr-geo: actors that run models over tiles of a store, and cluster connection."""
