"""Small helpers with no knowledge of the daemon: files, time, IDs."""
