"""MLLP (Minimal Lower Layer Protocol) over TCP: the listener and a small client."""
