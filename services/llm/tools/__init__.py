"""Tools (connectors) the model may call: a small interface, a registry, and the built-in ones."""
