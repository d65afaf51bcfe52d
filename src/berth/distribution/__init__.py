"""The registry side of images: the distribution API client that pull, push and login use."""
