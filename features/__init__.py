"""Canonical tickets, export mappings, text normalisation and tokenisation."""
