"""The models every method shares: backbone loading and presets, the SASRec recommender and its loss,
the attention-kernel choice. Imports data, config and the shared utilities."""
