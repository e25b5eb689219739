"""The saga's contract both services speak: which events travel on which topic."""
