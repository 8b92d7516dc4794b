"""pandera schemas for the input data and the result tables."""
