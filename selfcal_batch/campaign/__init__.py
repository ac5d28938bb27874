"""Campaign layer: manifest, deployment (cluster, job pool), dispatch, lock, progress, preflight."""
