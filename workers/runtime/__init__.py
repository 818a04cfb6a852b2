"""Worker runtime: broker, middleware, resources, metrics, health."""
