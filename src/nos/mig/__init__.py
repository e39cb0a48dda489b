"""The MIG model: the catalog, the layout rules, the geometry engine (placement search) and its uses."""
