"""purenet experiments: each module reproduces one claim of the source notes."""
