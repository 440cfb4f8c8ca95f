"""Data package: clinical thresholds, code lists and unit aliases (TOML). No code lives here."""
