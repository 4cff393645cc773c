"""Research kept outside the product, one folder per experiment, each with its README."""
