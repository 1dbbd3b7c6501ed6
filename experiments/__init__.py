"""absl experiment binaries: thin mains that wire flags to pire_jax library calls."""
