"""zoo's built-in plugins, one module per family, registered through zoo's own entry points."""
