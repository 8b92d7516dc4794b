"""Growth-curve analysis library (no Prefect here)."""
