"""One dataset's pipeline: runner, context, typed state, records, steps, products, per-dataset log."""
