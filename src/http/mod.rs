//! hyper connections over any stream, kernel listeners and graceful shutdown.
