"""Subcommands of the `synctalk` CLI, one module each."""
