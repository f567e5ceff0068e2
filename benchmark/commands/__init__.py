"""Command implementations behind ``iisan-bench params`` and ``iisan-bench cache`` (the CLI's layer: may import
every layer below)."""
