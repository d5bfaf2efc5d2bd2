"""fartrack-jax: a JAX/Flax reimplementation of the FARTrack visual tracker."""
