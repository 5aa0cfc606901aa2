"""The SAGA service: the I/O shell around the pure scheduler engine."""
