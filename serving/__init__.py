"""The FastAPI scoring service, the intake page and the feedback store."""
