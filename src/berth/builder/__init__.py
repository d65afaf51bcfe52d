"""The classic Dockerfile builder behind ``POST /build`` (moby's ``builder/dockerfile``).

The parser (instructions, directives, variable expansion) is kept apart from
dispatch; steps run as containers and commit through the layer store.
"""
