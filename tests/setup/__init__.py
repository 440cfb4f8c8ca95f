"""What the test suite sets up on the machine itself: a private PostgreSQL (`postgres.py`)."""
