"""The ``stereo-adapt`` command line."""
