"""Super-resolution models: one module per architecture, a registry that builds them from weights."""
