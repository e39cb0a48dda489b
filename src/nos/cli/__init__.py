"""The ``nos`` command line (click): each sub-command parses options and calls the library; no logic lives here."""
