"""pycorefile's built-in plugins, one package each, registered as entry points."""
