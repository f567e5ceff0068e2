"""Fine-tuning strategies, one module per strategy (a package where one needs several files), behind
one registry (``methods.registry``). Nothing is imported here, so reading the registry stays cheap."""
