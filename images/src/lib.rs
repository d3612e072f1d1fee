//! Builds OCI image layouts with deterministic tar layers, for the example image and tests.
