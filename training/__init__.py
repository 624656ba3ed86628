"""Training, evaluation, registration and the triage command line."""
