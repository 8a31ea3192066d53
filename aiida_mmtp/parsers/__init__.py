"""Parsers of the plugin (output readers for ABINIT cDFT runs)."""
