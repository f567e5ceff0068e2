"""Datasets: the TSV / synthetic loaders, the leave-one-out split, item images. Imports only config and
the shared utilities."""
