"""Package data: the model registry (registry.toml). No code lives here."""
