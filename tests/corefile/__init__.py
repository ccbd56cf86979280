"""Tests of the Corefile language (lexer, grammar, imports, keys)."""
