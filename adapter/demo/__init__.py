"""Demo: bundled synthetic data and the pharmacist table."""
