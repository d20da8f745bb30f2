"""xaikit."""
