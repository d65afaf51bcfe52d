"""The registry side of images: the distribution API client that pull, push and login use.

Only what a request carries (:class:`AuthConfig`) and ``docker info`` shows is imported
here: the client, pull and push (http.client and email with them, 1.6 MB of berthd's
idle RSS) load when a route first needs them.
"""

from berth.distribution._auth import INDEX_SERVER, AuthConfig

__all__ = ["INDEX_SERVER", "AuthConfig"]
