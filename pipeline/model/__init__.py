"""The model engine: formula, design, deviance, optimizer, inference, results."""
