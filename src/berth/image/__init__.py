"""Images: content-addressed configs, tags, and the ways images come in."""
