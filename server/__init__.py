"""The HTTP face: the FastAPI app for pilots, users and DDM callbacks."""
