"""The pure clinical core: ANC history, designations, dispenses and a clock in; decisions out.

No I/O, no clock reads, no environment, no logging: an import-linter contract enforces it.
"""
