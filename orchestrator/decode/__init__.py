"""Decoding uploads: format sniffing, limits, EXIF orientation, colour modes and ICC profiles."""
